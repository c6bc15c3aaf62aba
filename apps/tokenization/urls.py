from django.urls import path

from apps.tokenization import views

app_name = "tokenization"

urlpatterns = [
    path("", views.playground, name="playground"),
    path("tokenize/", views.tokenize, name="tokenize"),
    path("more/", views.more, name="more"),
    path("decode/", views.decode, name="decode"),
    path("library/", views.library, name="library"),
    path("train/", views.train, name="train"),
    path("char/", views.char, name="char"),
    path("<str:name>/", views.detail, name="detail"),
    path("<str:name>/merges/", views.merges, name="merges"),
    path("<str:name>/vocab/", views.vocab, name="vocab"),
    path("<str:name>/cancel/", views.cancel, name="cancel"),
    path("<str:name>/delete/", views.delete, name="delete"),
]
