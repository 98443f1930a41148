// lettachat: thread management behaviours (keyboard, older messages, edit/regenerate).
// No inline scripts anywhere; everything else is htmx attributes in the templates.
(function () {
  "use strict";

  function messages() { return document.getElementById("messages"); }

  // Alt+N starts a new conversation; after it opens, the message box has the focus.
  var focusComposerNext = false;
  document.addEventListener("keydown", function (event) {
    if (event.altKey && !event.ctrlKey && !event.metaKey && !event.shiftKey && event.code === "KeyN") {
      var button = document.getElementById("new-conversation");
      if (button && !button.disabled) {
        event.preventDefault();
        focusComposerNext = true;
        button.click();
      }
    }
  });

  // Up/Down (and Home/End) move between the links of a sidebar list.
  document.addEventListener("keydown", function (event) {
    var link = event.target;
    if (!(link instanceof HTMLAnchorElement) || event.altKey || event.ctrlKey || event.metaKey) return;
    var list = link.closest(".conversation-list, .agent-list");
    if (!list) return;
    var links = Array.prototype.slice.call(list.querySelectorAll(":scope > li > a"));
    var index = links.indexOf(link);
    var next;
    if (event.key === "ArrowDown") next = links[index + 1];
    else if (event.key === "ArrowUp") next = links[index - 1];
    else if (event.key === "Home") next = links[0];
    else if (event.key === "End") next = links[links.length - 1];
    else return;
    event.preventDefault();
    if (next) next.focus();
  });

  // "Load older messages" puts them above: keep what the reader was looking at where it was.
  var fromBottom = null;
  var olderHadFocus = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "load-older" || !event.detail.shouldSwap) return;
    var list = messages();
    if (!list) return;
    fromBottom = list.scrollHeight - list.scrollTop;
    olderHadFocus = target.contains(document.activeElement);
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (fromBottom === null) return;
    var list = messages();
    if (list) list.scrollTop = list.scrollHeight - fromBottom;
    fromBottom = null;
    var more = document.querySelector("#load-older button");
    if (more && olderHadFocus) more.focus({ preventScroll: true });
  });

  // A thread opened by "Edit and resend" has the last message in the box, ready to edit;
  // one opened by "Regenerate" sends it again as soon as the live connection is up.
  function pendingRewind(kind) {
    var marker = document.getElementById("rewind-pending");
    if (!marker || marker.dataset.rewind !== kind) return null;
    return marker;
  }
  document.addEventListener("htmx:afterSettle", function (event) {
    if (!event.target || event.target.id !== "thread") return;
    var box = document.getElementById("composer-input");
    var marker = pendingRewind("edit");
    if (marker) marker.remove();
    if ((marker || focusComposerNext) && box) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
    focusComposerNext = false;
  });
  document.addEventListener("htmx:wsOpen", function () {
    var marker = pendingRewind("regenerate");
    if (!marker) return;
    marker.remove();
    var form = document.getElementById("composer");
    if (form && form.requestSubmit) form.requestSubmit();
  });
})();
