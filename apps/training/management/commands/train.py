"""`manage.py train --preset shakespeare-char-cpu --set max_steps=500 --set learning_rate=3e-4`

The same job as the browser's: the same form validates the settings, the same service creates the run, and the same
glue trains it — here, in this process, printing nanoGPT-style lines — so it shows on the dashboard like any other
run. Ctrl-C cancels it like the Cancel button (a checkpoint is saved; Resume continues it). With --queue it only
joins the train queue for a worker to pick up.
"""

import platform
import signal
import threading

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.training import services, sources
from apps.training.forms import MODEL_FIELDS, TRAIN_FIELDS, RunForm
from apps.training.models import Run
from apps.training.presets import PRESETS


class Command(BaseCommand):
    help = "Train a GPT from a preset (with --set overrides) through the same code as the web app."

    def add_arguments(self, parser):
        parser.add_argument("--preset", default="shakespeare-char-cpu", choices=sorted(PRESETS))
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help=f"override a setting: {', '.join(MODEL_FIELDS + TRAIN_FIELDS)}")
        parser.add_argument("--corpus", help="corpus name (default: the preset's)")
        parser.add_argument("--tokenizer", help="tokenizer name (default: the preset's)")
        parser.add_argument("--name", default="", help="the run's name")
        parser.add_argument("--user", help="owner of the run (default: the first superuser)")
        parser.add_argument("--queue", action="store_true", help="only queue the run for a train worker")

    def handle(self, *args, preset, set, corpus, tokenizer, name, user, queue, **options):
        owner = self.owner(user)
        data = RunForm.initial_for(preset_key=preset, user=owner)
        if corpus:
            found = sources.corpus_find(name=corpus, user=owner)
            if found is None:
                raise CommandError(f"no corpus named {corpus!r}: see the Data page for their names")
            data["corpus"] = found.pk
        if tokenizer:
            found = sources.tokenizer_find(names=[tokenizer], user=owner)
            if found is None:
                raise CommandError(f"no ready tokenizer named {tokenizer!r}: see the Tokenizers page")
            data["tokenizer"] = found.pk
        for item in set:
            key, sep, value = item.partition("=")
            if not sep or key not in MODEL_FIELDS + TRAIN_FIELDS:
                raise CommandError(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                                   f"{', '.join(MODEL_FIELDS + TRAIN_FIELDS)}")
            data[key] = value
        data["name"] = name
        form = RunForm({k: v for k, v in data.items() if v is not None and v is not False and v != "false"},
                       user=owner)
        if not form.is_valid():
            lines = [f"  {field if field != '__all__' else 'settings'}: {' '.join(errors)}"
                     for field, errors in form.errors.items()]
            raise CommandError("the settings are refused:\n" + "\n".join(lines))
        for warning in form.warnings:
            self.stderr.write(self.style.WARNING(warning))
        model_config, train_config = form.configs()
        d = form.cleaned_data
        run = services.run_create(owner=owner, corpus=d["corpus"], tokenizer=d["tokenizer"],
                                  model_config=model_config, train_config=train_config, name=d["name"],
                                  preset=preset, enqueue=queue,
                                  data={"corpus": d["corpus"].name, "tokenizer": d["tokenizer"].name,
                                        "n_vocab": form.data_info.n_vocab})
        self.stdout.write(f"Run #{run.pk} {run.name}: dashboard at /training/runs/{run.pk}/")
        if queue:
            self.stdout.write("Queued for a train worker.")
            return
        self.train_here(run.pk)

    def train_here(self, run_id: int) -> None:
        from workers.training import train_run

        stop = threading.Event()

        def on_interrupt(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            self.stderr.write("Cancelling after this step (Ctrl-C again to quit at once)…")
            stop.set()

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            outcome = train_run(run_id, worker=f"manage.py@{platform.node()}", echo=self.stdout.write, stop=stop)
        finally:
            signal.signal(signal.SIGINT, previous)
        run = Run.objects.get(pk=run_id)
        style = self.style.SUCCESS if run.status == "succeeded" else self.style.ERROR
        self.stdout.write(style(f"Run #{run_id} {run.status} ({outcome}){': ' + run.reason if run.reason else ''}"))
        if run.status == "failed":
            raise CommandError(run.reason)

    def owner(self, username):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(username=username)
            except User.DoesNotExist:
                raise CommandError(f"no user {username!r}") from None
        owner = User.objects.filter(is_superuser=True).order_by("pk").first()
        if owner is None:
            raise CommandError("no superuser to own the run: pass --user NAME (or run `manage.py seed` first)")
        return owner
