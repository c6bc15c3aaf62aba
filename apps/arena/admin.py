from django.contrib import admin, messages

from apps.arena import services
from apps.arena.models import Battle, Vote


@admin.register(Battle)
class BattleAdmin(admin.ModelAdmin):
    list_display = ("uid", "user", "mode", "model_a", "model_b", "created")
    list_filter = ("mode", "model_a", "model_b")
    search_fields = ("prompt", "user__username")
    raw_id_fields = ("generation_a", "generation_b")
    readonly_fields = ("uid", "created", "started")


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("battle", "user", "choice", "created")
    list_filter = ("choice", "user")
    search_fields = ("user__username",)
    raw_id_fields = ("battle",)
    actions = ["remove_users_votes"]

    @admin.action(description="Remove every vote of the selected votes' users")
    def remove_users_votes(self, request, queryset):
        users = list({v.user for v in queryset.select_related("user")})
        deleted = services.votes_remove(users=users)
        names = ", ".join(sorted(u.username for u in users))
        self.message_user(request, f"Removed {deleted} vote(s) of {names}; the leaderboard recomputes without them.",
                          messages.SUCCESS)
