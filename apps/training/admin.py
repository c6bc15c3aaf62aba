from django.contrib import admin, messages

from apps.training import services
from apps.training.models import Checkpoint, DeviceProfile, Run, RunEvent


class CheckpointInline(admin.TabularInline):
    model = Checkpoint
    extra = 0
    fields = ("step", "val_loss", "train_loss", "size_bytes", "path", "created")
    readonly_fields = fields
    can_delete = False


class RunEventInline(admin.TabularInline):
    model = RunEvent
    extra = 0
    fields = ("at", "kind", "step", "message")
    readonly_fields = fields
    can_delete = False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "status", "step", "best_val_loss", "worker", "created")
    list_filter = ("status", "preset")
    search_fields = ("name", "owner__username", "worker")
    readonly_fields = ("model_config", "train_config", "data", "step", "train_loss", "val_loss", "best_val_loss",
                       "latest", "elapsed_seconds", "worker", "device", "task_id", "lease_token", "lease_expires",
                       "attempts", "epoch", "parent", "forked_from_step", "created", "queued", "started", "finished")
    inlines = [CheckpointInline, RunEventInline]
    actions = ["cancel_runs"]

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request, queryset):
        done = 0
        for run in queryset.filter(status__in=Run.ACTIVE):
            try:
                services.run_cancel(run=run, user=request.user)
                done += 1
            except services.TrainingError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"Cancel requested for {done} run(s).")


@admin.register(DeviceProfile)
class DeviceProfileAdmin(admin.ModelAdmin):
    list_display = ("key", "peak_flops", "mfu", "runs", "updated")
