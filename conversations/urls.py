from django.urls import path

from conversations import views

urlpatterns = [
    path("", views.home, name="home"),
    path("status/letta/", views.letta_status, name="letta_status"),
    path("a/<str:letta_id>/", views.agent_detail, name="agent_detail"),
    path("a/<str:letta_id>/new/", views.conversation_create, name="conversation_create"),
    path("c/<str:letta_id>/", views.conversation_detail, name="conversation_detail"),
]
