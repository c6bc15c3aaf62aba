"""`manage.py finetune --base shakespeare-char --data "Conversations (char-safe)" --steps 300 [--lora --rank 8]`

The same job as the browser's "Fine-tune a model": the same form checks the settings, the same service creates the
run, the same glue (workers/finetune.py through workers/training.py) trains it here, printing progress and the
model's answers at each evaluation, and registers the result as `<base>-sft`. Ctrl-C cancels like the Cancel button.
With --queue it only joins the train queue.
"""

from django.core.management.base import CommandError

from apps.training.finetune import sft_run_create
from apps.training.forms_sft import FinetuneForm
from apps.training.management.commands.train import Command as TrainCommand
from apps.training.models import Run


class Command(TrainCommand):
    help = "Fine-tune a registry model on a conversation set through the same code as the web app."

    def add_arguments(self, parser):
        parser.add_argument("--base", required=True, help="the base model's slug (or name), as the registry lists it")
        parser.add_argument("--data", required=True, help="the conversation set's name, as the Data page lists it")
        parser.add_argument("--steps", type=int, default=300)
        parser.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
        parser.add_argument("--rank", type=int, default=8)
        parser.add_argument("--alpha", type=float, default=16.0)
        parser.add_argument("--dropout", type=float, default=0.0)
        parser.add_argument("--targets", default="c_attn, c_proj", help="LoRA target modules, comma-separated")
        parser.add_argument("--lr", type=float, help="learning rate (default: 5e-5 full, 1e-3 LoRA)")
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--block-size", type=int, help="default: the base model's context")
        parser.add_argument("--eval-interval", type=int)
        parser.add_argument("--device", default="auto")
        parser.add_argument("--name", default="", help="the run's name")
        parser.add_argument("--user", help="owner of the run (default: the first superuser)")
        parser.add_argument("--queue", action="store_true", help="only queue the run for a train worker")

    def handle(self, *args, **o):
        from apps.corpora.models import Corpus
        from apps.registry.models import Model

        owner = self.owner(o["user"])
        base = Model.objects.filter(slug=o["base"]).first() or Model.objects.filter(name=o["base"]).first()
        if base is None:
            raise CommandError(f"no model {o['base']!r}: `manage.py shell -c` or the Models page lists them")
        corpus = Corpus.objects.visible_to(owner).filter(kind=Corpus.Kind.CONVERSATIONS, name=o["data"]).first()
        if corpus is None:
            raise CommandError(f"no conversation set named {o['data']!r}: see the Data page for their names")
        data = {"name": o["name"], "base_model": base.slug, "corpus": corpus.pk,
                "method": "lora" if o["lora"] else "full", "lora_rank": o["rank"], "lora_alpha": o["alpha"],
                "lora_dropout": o["dropout"], "lora_targets": o["targets"], "max_steps": o["steps"],
                "learning_rate": o["lr"], "batch_size": o["batch_size"], "block_size": o["block_size"],
                "eval_interval": o["eval_interval"], "device": o["device"]}
        form = FinetuneForm({k: v for k, v in data.items() if v is not None}, user=owner)
        if not form.is_valid():
            lines = [f"  {field if field != '__all__' else 'settings'}: {' '.join(errors)}"
                     for field, errors in form.errors.items()]
            raise CommandError("the settings are refused:\n" + "\n".join(lines))
        run = sft_run_create(owner=owner, plan=form.plan, name=o["name"], enqueue=o["queue"])
        self.stdout.write(f"Run #{run.pk} {run.name}: dashboard at /training/runs/{run.pk}/")
        if o["queue"]:
            self.stdout.write("Queued for a train worker.")
            return
        self.train_here(run.pk)
        run = Run.objects.get(pk=run.pk)
        for model in run.models.all():
            self.stdout.write(self.style.SUCCESS(f"Model {model.name} ({model.slug}) registered."))
