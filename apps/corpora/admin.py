from django.contrib import admin

from apps.corpora.models import Corpus, Shards


@admin.register(Corpus)
class CorpusAdmin(admin.ModelAdmin):
    list_display = ("name", "builtin", "owner", "size_bytes", "n_chars", "val_fraction", "created")
    list_filter = ("builtin",)
    search_fields = ("name", "description", "sha256")
    readonly_fields = ("path", "sha256", "size_bytes", "n_chars", "n_lines", "stats", "created")


@admin.register(Shards)
class ShardsAdmin(admin.ModelAdmin):
    list_display = ("corpus", "tokenizer", "status", "progress", "dtype", "n_train_tokens", "n_val_tokens", "created")
    list_filter = ("status", "dtype")
    readonly_fields = ("cache_key", "train_path", "val_path", "task_id", "created", "started", "finished", "updated")
