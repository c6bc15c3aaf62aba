"""The admin panel for models: list with filters and search, rename, publish / archive / back to draft in bulk,
download the weights and sidecar, delete a model together with its files (Django's confirmation page lists them).

Staff manage models, whatever their Django permissions say: that is the rule of the whole app (DESIGN.md), and
every change goes through apps.registry.services, as the pages' do.
"""

from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from apps.registry import selectors, services
from apps.registry.models import Model, ModelImport


class StaffOnly:
    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff


@admin.register(Model)
class ModelAdmin(StaffOnly, admin.ModelAdmin):
    list_display = ("name", "status", "architecture", "params", "size", "origin", "val_loss", "owner", "created")
    list_filter = ("status", "architecture", "source", "created")
    search_fields = ("name", "slug", "description", "owner__username", "run__name")
    list_editable = ("status",)
    actions = ["publish", "archive", "make_draft"]
    readonly_fields = ("slug", "architecture", "params", "size", "sha256", "origin", "lineage_chain", "downloads",
                       "tokenizer", "step", "val_loss", "run", "checkpoint", "owner", "created", "updated",
                       "config_table", "path")
    fieldsets = (
        (None, {"fields": ("name", "status", "description")}),
        ("Where it comes from", {"fields": ("origin", "lineage_chain", "run", "checkpoint", "step", "val_loss",
                                           "owner", "created", "updated")}),
        ("Architecture", {"fields": ("architecture", "params", "config_table", "tokenizer", "chat_template",
                                     "stop_ids")}),
        ("Files", {"fields": ("downloads", "path", "size", "sha256")}),
    )
    ordering = ("-created",)

    def has_add_permission(self, request):
        return False  # models come from runs (promote) or files (Models → Import), never from an empty form

    @admin.display(description="parameters", ordering="n_params")
    def params(self, obj):
        return selectors.human_count(obj.n_params)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return filesizeformat(obj.size_bytes)

    @admin.display(description="source")
    def origin(self, obj):
        if obj.source == Model.Source.RUN:
            return f"run {obj.lineage.get('run', '?')} · step {obj.step}"
        return f"imported: {obj.source_detail.get('file', '?')}"

    @admin.display(description="lineage")
    def lineage_chain(self, obj):
        steps = selectors.model_lineage(obj)
        return format_html_join(" → ", "<span title='{}'>{}</span>", ((s["kind"], s["label"]) for s in steps))

    @admin.display(description="download")
    def downloads(self, obj):
        links = [(reverse("registry:download", args=[obj.slug, f["kind"]]), f["kind"], f["name"],
                  filesizeformat(f["size"]) if f["size"] is not None else "missing") for f in selectors.model_files(obj)]
        return format_html_join(" · ", "<a href='{}' download>{} <code>{}</code></a> ({})", links)

    @admin.display(description="config")
    def config_table(self, obj):
        return format_html("<code>{}</code>", ", ".join(f"{k}={v}" for k, v in sorted(obj.config.items())))

    # -- changes go through the services ---------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        fields = form.changed_data
        services.model_update(model=Model.objects.get(pk=obj.pk), user=request.user,
                              name=obj.name if "name" in fields else None,
                              description=obj.description if "description" in fields else None,
                              status=obj.status if "status" in fields else None)
        extra = [f for f in fields if f in ("chat_template", "stop_ids")]
        if extra:
            obj.save(update_fields=extra)

    def delete_model(self, request, obj):
        services.model_delete(model=obj, user=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.model_delete(model=obj, user=request.user)

    def _set(self, request, queryset, status):
        n = services.model_set_status(models=queryset, status=status, user=request.user)
        self.message_user(request, f"{n} model(s) are now {status}.", messages.SUCCESS)

    @admin.action(description="Publish the selected models (everyone can use them)")
    def publish(self, request, queryset):
        self._set(request, queryset, Model.Status.PUBLISHED)

    @admin.action(description="Archive the selected models (no longer offered)")
    def archive(self, request, queryset):
        self._set(request, queryset, Model.Status.ARCHIVED)

    @admin.action(description="Return the selected models to draft (owner and staff only)")
    def make_draft(self, request, queryset):
        self._set(request, queryset, Model.Status.DRAFT)


@admin.register(ModelImport)
class ModelImportAdmin(StaffOnly, admin.ModelAdmin):
    list_display = ("name", "status", "progress_pct", "error", "model", "owner", "created")
    list_filter = ("status",)
    search_fields = ("name", "source_path", "error")
    readonly_fields = [f.name for f in ModelImport._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress_pct(self, obj):
        return f"{obj.progress:.0%}"
