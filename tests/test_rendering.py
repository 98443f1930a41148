"""Model markdown becomes safe HTML."""

import pytest

from chat.rendering import render_markdown
from tests.html_safety import assert_inert, inert_problems


def test_markdown_is_rendered():
    html = render_markdown("# Title\n\n**bold** and `code`\n\n- one\n- two")
    assert "<h3>Title</h3>" in html
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert "<li>one</li>" in html


def test_headings_in_a_reply_sit_below_the_pages_own():
    """The thread's title is the page's h1 and its panels' titles h2: a reply starts at h3."""
    html = render_markdown("# One\n\n## Two\n\n### Three\n\n#### Four\n\n###### Six")
    assert "<h3>One</h3>" in html
    assert "<h4>Two</h4>" in html
    assert "<h5>Three</h5>" in html
    assert "<h6>Four</h6>" in html
    assert "<h6>Six</h6>" in html
    assert "<h1>" not in html and "<h2>" not in html


def test_code_blocks_are_highlighted():
    html = render_markdown("```python\ndef f():\n    return 1\n```")
    assert '<span class="hl-k">def</span>' in html


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[click](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
        "![x](javascript:alert(1))",
        '<iframe src="https://evil.example"></iframe>',
        "<svg onload=alert(1)>",
        '[x](https://ok.example "title" onclick=alert(1))',
    ],
)
def test_nothing_a_model_writes_runs_as_code(text):
    assert_inert(render_markdown(text))


def test_the_safety_check_itself_spots_active_content():
    for bad in [
        '<img src=x onerror="alert(1)">',
        '<a href="javascript:alert(1)">x</a>',
        "<script>1</script>",
    ]:
        assert inert_problems(bad)


def test_links_are_marked_external():
    html = render_markdown("[Letta](https://letta.com)")
    assert 'href="https://letta.com"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
