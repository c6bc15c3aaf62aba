from django.urls import path

from apps.arena import views

app_name = "arena"

urlpatterns = [
    path("", views.page, name="page"),
    path("battles/", views.battle_create, name="battle_create"),
    path("battles/<uuid:uid>/", views.battle, name="battle"),
    path("battles/<uuid:uid>/vote/", views.vote, name="vote"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("votes.jsonl", views.votes_export, name="votes_export"),
]
