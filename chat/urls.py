from django.urls import path

from chat import approval_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("status/letta/", views.letta_status, name="letta_status"),
    path("a/<str:letta_id>/", views.agent_detail, name="agent_detail"),
    path("a/<str:letta_id>/new/", views.conversation_create, name="conversation_create"),
    path("c/<str:letta_id>/", views.conversation_detail, name="conversation_detail"),
    # Threads: sidebar pages, archived view, search, older messages, rename/archive/delete/fork.
    path("a/<str:letta_id>/archived/", views.agent_archived, name="agent_archived"),
    path(
        "a/<str:letta_id>/conversations/",
        views.conversation_list_page,
        name="conversation_list_page",
    ),
    path("a/<str:letta_id>/search/", views.conversation_search, name="conversation_search"),
    path("c/<str:letta_id>/messages/", views.message_list_older, name="message_list_older"),
    path("c/<str:letta_id>/rename/", views.conversation_rename, name="conversation_rename"),
    path("c/<str:letta_id>/archive/", views.conversation_archive, name="conversation_archive"),
    path(
        "c/<str:letta_id>/unarchive/", views.conversation_unarchive, name="conversation_unarchive"
    ),
    path("c/<str:letta_id>/delete/", views.conversation_delete, name="conversation_delete"),
    path("c/<str:letta_id>/fork/", views.conversation_fork, name="conversation_fork"),
    path("c/<str:letta_id>/rewind/", views.conversation_rewind, name="conversation_rewind"),
    path(
        "c/<str:letta_id>/rewind/controls/",
        views.conversation_rewind_controls,
        name="conversation_rewind_controls",
    ),
    # A person's data: a conversation as a file; everything as a zip; erase.
    path(
        "c/<str:letta_id>/download.md",
        views.conversation_download,
        {"fmt": "md"},
        name="conversation_download_markdown",
    ),
    path(
        "c/<str:letta_id>/download.json",
        views.conversation_download,
        {"fmt": "json"},
        name="conversation_download_json",
    ),
    path("me/data/", views.my_data, name="my_data"),
    path("me/data/export/", views.my_data_export, name="my_data_export"),
    path("me/data/erase/", views.my_data_erase, name="my_data_erase"),
    # Rich messages: the agent's memory, shared by its conversations.
    path("c/<str:letta_id>/memory/", views.conversation_memory, name="conversation_memory"),
    # Conversation info: Letta's view of the thread and its context window.
    path("c/<str:letta_id>/info/", views.conversation_info, name="conversation_info"),
    # Tool approvals: the owner's answer to the agent's request (pages answer over the socket).
    path("c/<str:letta_id>/approval/", approval_views.approval_answer, name="approval_answer"),
]
