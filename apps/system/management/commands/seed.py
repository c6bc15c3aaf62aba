from django.core.management.base import BaseCommand

from apps.corpora.conversations import conversations_seed_defaults
from apps.corpora.services import corpus_seed_defaults
from apps.registry.services import model_seed_defaults
from apps.system.services import admin_ensure
from apps.tokenization.services import tokenizer_seed_defaults


class Command(BaseCommand):
    help = "Seed the defaults: the first admin account (and, as the apps arrive, corpora, tokenizers and models)."

    def handle(self, *args, **options):
        password = admin_ensure()
        if password:
            self.stdout.write(self.style.SUCCESS(f"Created the admin account — user: admin  password: {password}"))
            self.stdout.write("  (shown this once; change it in the admin, or run: manage.py changepassword admin)")
        corpora = corpus_seed_defaults()
        corpora += conversations_seed_defaults()
        shakespeare = next((c for c in corpora if c.name == "Shakespeare"), None)
        tokenizers = tokenizer_seed_defaults(shakespeare=shakespeare)
        self.stdout.write(f"Corpora: {', '.join(c.name for c in corpora)}. "
                          f"Tokenizers: {', '.join(t.name for t in tokenizers)}.")
        model = model_seed_defaults(stdout=self.stdout)  # SmolLM2: converted once (~10 s), then only checked
        if model is not None:
            self.stdout.write(f"Models: {model.name} ({model.status}).")
