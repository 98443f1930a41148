// lettachat: conversation info. Marks the thread's messages that have left the agent's context
// window (the info panel, #conversation-info, lists them in data-left-context), and reloads the
// panel when a reply ends. No inline scripts anywhere (CSP).
(function () {
  "use strict";

  var LABEL = "not in the agent's context";

  function leftContext() {
    var source = document.querySelector("#conversation-info [data-left-context]");
    var pks = source ? source.getAttribute("data-left-context").split(" ") : [];
    var left = {};
    pks.forEach(function (pk) { if (pk) left["msg-" + pk] = true; });
    return left;
  }

  // Idempotent: run after anything that changes the messages or the panel.
  function mark() {
    var left = leftContext();
    document.querySelectorAll('#messages article[id^="msg-"]').forEach(function (article) {
      var out = left[article.id] === true;
      var label = article.querySelector(":scope > .left-context-label");
      article.classList.toggle("msg-left-context", out);
      if (out && !label) {
        label = document.createElement("p");
        label.className = "left-context-label";
        label.textContent = LABEL;
        article.appendChild(label);
      } else if (!out && label) {
        label.remove();
      }
    });
  }

  // A reply has ended when the reply status stops being busy: Letta's context changed.
  var wasBusy = false;

  function refreshWhenReplyEnds() {
    var status = document.getElementById("reply-status");
    var busy = !!status && status.getAttribute("data-busy") === "true";
    var panel = document.getElementById("conversation-info");
    if (wasBusy && !busy && panel && window.htmx) window.htmx.trigger(panel, "conversation-info-refresh");
    wasBusy = busy;
  }

  function update() {
    mark();
    refreshWhenReplyEnds();
  }

  document.addEventListener("DOMContentLoaded", mark);
  document.addEventListener("htmx:afterSettle", update);
  document.addEventListener("htmx:oobAfterSwap", update);
  document.addEventListener("htmx:wsAfterMessage", update);
})();
