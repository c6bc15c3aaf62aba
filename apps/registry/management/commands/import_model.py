from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.registry.models import Model
from apps.registry.services import RegistryError, import_source_check, model_import_file


class Command(BaseCommand):
    help = ("Import a model file into the registry: a Llama-family .gguf file, or a Hugging Face GPT-2 / Llama "
            "directory (config.json + model.safetensors + tokenizer.json). Runs here, without a worker.")

    def add_arguments(self, parser):
        parser.add_argument("path", help="the .gguf file or the Hugging Face directory")
        parser.add_argument("--name", help="what to call it (default: the file or directory name)")
        parser.add_argument("--publish", action="store_true", help="make it available to everyone at once")

    def handle(self, *args, path, name, publish, **options):
        from workers.gpt.formats import ImportRefused

        source = Path(path).expanduser()
        name = name or source.stem
        status = Model.Status.PUBLISHED if publish else Model.Status.DRAFT

        def progress(fraction, phase):
            self.stdout.write(f"  {fraction:4.0%}  {phase}")

        try:
            source = import_source_check(source)
            model = model_import_file(source=source, name=name, status=status, on_progress=progress)
        except (ImportRefused, RegistryError) as e:
            raise CommandError(f"Not imported: {e}") from None
        self.stdout.write(self.style.SUCCESS(
            f"Imported {model.name} ({model.n_params:,} parameters, {model.status}) as /models/{model.slug}/"))
