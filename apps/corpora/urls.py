from django.urls import path

from apps.corpora import taskset_views, views, views_conversations

app_name = "corpora"

urlpatterns = [
    path("", views.corpus_list, name="list"),
    path("upload/", views.upload, name="upload"),
    path("tasks/new/", taskset_views.taskset_new, name="taskset_new"),
    path("upload/conversations/", views_conversations.upload, name="upload_conversations"),
    path("<int:corpus_id>/", views.detail, name="detail"),
    path("<int:corpus_id>/preview/", views.preview, name="preview"),
    path("<int:corpus_id>/split/", views.split, name="split"),
    path("<int:corpus_id>/encode/", views.encode, name="encode"),
    path("<int:corpus_id>/delete/", views.delete, name="delete"),
    path("shards/<int:shards_id>/cancel/", views.shards_cancel, name="shards_cancel"),
]
