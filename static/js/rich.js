// lettachat: rich messages. A copy button on code blocks, and telling screen readers when a reply
// starts and ends. No inline scripts anywhere (CSP).
(function () {
  "use strict";

  // --- Copy buttons on the code blocks of rendered markdown ---------------------------------------

  function addCopyButtons(root) {
    (root || document).querySelectorAll(".markdown pre").forEach(function (pre) {
      if (pre.querySelector(":scope > .copy-code")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-code";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      pre.insertBefore(button, pre.firstChild);
    });
  }

  function codeOf(pre) {
    var code = pre.querySelector("code");
    if (code) return code.textContent;
    var copy = pre.cloneNode(true);
    copy.querySelectorAll(".copy-code").forEach(function (b) { b.remove(); });
    return copy.textContent;
  }

  function showState(button, text, state) {
    button.textContent = text;
    button.dataset.state = state;
    clearTimeout(button._reset);
    button._reset = setTimeout(function () {
      button.textContent = "Copy";
      delete button.dataset.state;
    }, 2000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest(".copy-code") : null;
    if (!button) return;
    var pre = button.closest("pre");
    if (!pre || !navigator.clipboard) {
      showState(button, "Copy failed", "failed");
      return;
    }
    navigator.clipboard.writeText(codeOf(pre)).then(
      function () { showState(button, "Copied", "copied"); },
      function () { showState(button, "Copy failed", "failed"); }
    );
  });

  // --- Screen readers: a reply starts, a reply ends -----------------------------------------------
  // #reply-status is replaced whole by each update, and a region inserted with its text already in
  // it is often not read out. So its words are repeated in #reply-announcer, a live region that
  // stays put. The status changes when a reply starts, stalls, stops and ends; never per token.

  var announced = "";

  function announce() {
    var announcer = document.getElementById("reply-announcer");
    var status = document.getElementById("reply-status");
    if (!announcer || !status) return;
    var text = "";
    status.querySelectorAll(".reply-status-text, .reply-finished").forEach(function (part) {
      text += " " + part.textContent;
    });
    text = text.replace(/\s+/g, " ").trim();
    if (text === announced) return;
    announced = text;
    if (text) announcer.textContent = text;
  }

  function update() {
    addCopyButtons(document);
    announce();
  }

  document.addEventListener("DOMContentLoaded", function () { addCopyButtons(document); });
  document.addEventListener("htmx:afterSettle", update);
  document.addEventListener("htmx:oobAfterSwap", update);
  document.addEventListener("htmx:wsAfterMessage", update);
})();
