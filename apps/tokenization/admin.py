from django.contrib import admin

from apps.tokenization.models import Tokenizer


@admin.register(Tokenizer)
class TokenizerAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "n_vocab", "corpus", "owner", "created")
    list_filter = ("kind", "status", "builtin")
    search_fields = ("name", "description")
    readonly_fields = ("fingerprint", "path", "task_id", "created", "started", "finished", "updated")
