from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from lettachat import health

urlpatterns = [
    # Served by lettachat.health.ProbeMiddleware first; named here for reverse() and the tests.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("chat.urls")),
]
