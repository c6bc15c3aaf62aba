from django.contrib.auth import views as auth_views
from django.urls import path

from apps.system import views

app_name = "system"

urlpatterns = [
    path("", views.home, name="home"),
    path("system/", views.status, name="status"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
