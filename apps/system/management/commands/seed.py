from django.core.management.base import BaseCommand

from apps.system.services import admin_ensure


class Command(BaseCommand):
    help = "Seed the defaults: the first admin account (and, as the apps arrive, corpora, tokenizers and models)."

    def handle(self, *args, **options):
        password = admin_ensure()
        if password:
            self.stdout.write(self.style.SUCCESS(f"Created the admin account — user: admin  password: {password}"))
            self.stdout.write("  (shown this once; change it in the admin, or run: manage.py changepassword admin)")
