from django.contrib import admin

from apps.explorer.models import Share, Trace


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    """The trace cache: what was traced, how long it took, what it weighs. Deleting a row deletes its file."""

    list_display = ("key_short", "source_label", "status", "n_tokens", "compute_ms", "size_bytes", "created", "used")
    list_filter = ("status",)
    search_fields = ("source", "source_label", "text")
    readonly_fields = [f.name for f in Trace._meta.fields]

    @admin.display(description="key")
    def key_short(self, obj):
        return obj.key[:12]

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        obj.file.unlink(missing_ok=True)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for trace in queryset:
            trace.file.unlink(missing_ok=True)
        super().delete_queryset(request, queryset)


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    list_display = ("key", "created")
    search_fields = ("key", "text")
    readonly_fields = ("key", "created")
