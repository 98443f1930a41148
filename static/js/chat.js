// lettachat: small page behaviours on top of htmx. No inline scripts anywhere.
(function () {
  "use strict";

  function messages() { return document.getElementById("messages"); }

  // What scrolls the thread: the message list, or the whole page on short narrow screens
  // (zoomed in), where the list grows and the page scrolls as one.
  function scroller() {
    var el = messages();
    if (el && getComputedStyle(el).overflowY !== "visible") return el;
    return document.scrollingElement || document.documentElement;
  }

  function nearBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }

  // Where the reader last was (after a scroll event, or after this script scrolled).
  var lastTop = 0;

  function scrollToEnd() {
    var el = scroller();
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    lastTop = el.scrollTop;
  }

  // Enter sends, Shift+Enter makes a new line.
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || target.id !== "composer-input") return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (target.form) target.form.requestSubmit();
    }
  });

  // Keep the newest message in view while it streams, unless the reader scrolled up.
  var stick = true;
  // Scrolled up: a button brings the newest message back (and keeps it in view again).
  function showJump() {
    var jump = document.getElementById("jump-latest");
    if (jump && jump.hidden !== stick) jump.hidden = stick;
  }
  document.addEventListener("scroll", function () {
    var el = scroller();
    stick = nearBottom(el);
    lastTop = el.scrollTop;
    showJump();
  }, true);
  // A scroll up whose event has not fired yet (events come with the next frame) still counts:
  // a frame landing in between must not pull the reader back down.
  function followEnd() {
    var el = scroller();
    if (stick && el && el.scrollTop < lastTop && !nearBottom(el)) {
      stick = false;
      showJump();
    }
    if (stick) scrollToEnd();
  }
  document.addEventListener("htmx:wsAfterMessage", followEnd);
  document.addEventListener("lettachat:painted", followEnd);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "thread") { stick = true; scrollToEnd(); showJump(); }
  });
  document.addEventListener("click", function (event) {
    if (!(event.target instanceof Element) || !event.target.closest("#jump-latest")) return;
    stick = true;
    scrollToEnd();
    showJump();
    var box = document.getElementById("composer-input");
    if (box && !box.disabled) box.focus({ preventScroll: true });
  });
  document.addEventListener("DOMContentLoaded", function () {
    scrollToEnd();
    document.documentElement.dataset.scripts = "ready";  // the thread's opening snap ends (app.css)
  });

  // Show whether the live connection is up.
  function setConnection(state) {
    var thread = document.querySelector(".thread-inner");
    if (thread) thread.dataset.connection = state;
  }
  document.addEventListener("htmx:wsConnecting", function () { setConnection("connecting"); });
  // Tell the server what this page already shows, so it sends what the page is missing and the
  // reply in progress, exactly once.
  var socket = null;
  function resume() {
    if (!socket) return;
    var shown = 0;
    document.querySelectorAll('#messages article[id^="msg-"]').forEach(function (article) {
      shown = Math.max(shown, parseInt(article.id.slice(4), 10) || 0);
    });
    var drafts = document.querySelectorAll("#messages .msg-streaming").length;
    socket.sendImmediately(JSON.stringify({ type: "resume", after: shown, drafts: drafts }));
  }
  document.addEventListener("htmx:wsOpen", function (event) {
    setConnection("open");
    socket = event.detail.socketWrapper;
    resume();  // before anything queued goes out: what was missed while the connection was down
  });
  // Another relay follows the reply now (the server's process changed): catch up from it.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "reply-resync") resume();
  });
  // The server process is going away (4012): reconnect (to another process), after a moment.
  var CLOSE_RESTARTING = 4012;
  document.addEventListener("htmx:wsClose", function (event) {
    setConnection("closed");
    var closed = event.detail && event.detail.event;
    if (closed && closed.code === CLOSE_RESTARTING && event.detail.socketWrapper) {
      var wrapper = event.detail.socketWrapper;
      setTimeout(function () { wrapper.reconnect(); }, 500 + Math.random() * 1500);
    }
  });
  // The session ended (logout, deactivation, a password change, expiry): the server closes the
  // socket with 4401. One reconnect first, with whatever cookie the browser now holds (a password
  // change in this browser gave it a new session); refused again, the page says so.
  var SIGNED_OUT = 4401;
  var reconnectedAfterSignOut = false;
  document.addEventListener("htmx:wsAfterMessage", function () { reconnectedAfterSignOut = false; });
  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail && event.detail.event ? event.detail.event.code : 0;
    if (code !== SIGNED_OUT) { setConnection("closed"); return; }
    if (!reconnectedAfterSignOut) {
      reconnectedAfterSignOut = true;
      event.detail.socketWrapper.reconnect();
      return;
    }
    showSignedOut();
  });

  function showSignedOut() {
    setConnection("signed-out");
    var thread = document.querySelector(".thread-inner");
    if (!thread || document.getElementById("signed-out")) return;
    var notice = document.createElement("p");
    notice.id = "signed-out";
    notice.className = "signed-out";
    notice.setAttribute("role", "alert");
    notice.appendChild(document.createTextNode("You were signed out. "));
    var link = document.createElement("a");
    var login = thread.dataset.loginUrl || "/login/";
    link.href = login + "?next=" + encodeURIComponent(location.pathname);
    link.textContent = "Log in again";
    notice.appendChild(link);
    notice.appendChild(document.createTextNode(" to go on with this conversation."));
    var composer = document.getElementById("composer");
    if (composer) {
      // The text stays in the box (nothing was sent); the box just cannot send any more.
      composer.querySelectorAll("textarea, button").forEach(function (el) { el.disabled = true; });
      composer.parentNode.insertBefore(notice, composer);
    } else {
      thread.appendChild(notice);
    }
  }

  // Too large to send: said here, before it goes (the server would answer the same; past its
  // own cap it would drop the connection instead). The text stays in the box.
  document.addEventListener("htmx:wsBeforeSend", function (event) {
    var thread = document.querySelector(".thread-inner");
    var limit = thread ? parseInt(thread.dataset.maxFrameBytes, 10) : 0;
    if (!limit) return;
    var size = new TextEncoder().encode(event.detail.message).length;
    if (size <= limit) return;
    event.preventDefault();
    var error = document.getElementById("composer-error");
    if (error) {
      error.textContent = "That message is too large to send (" + kib(size) +
        "; the limit is " + kib(limit) + "). Please shorten it.";
    }
  });

  function kib(size) {
    return size >= 1024 ? Math.round(size / 1024).toLocaleString("en") + " KB" : size + " bytes";
  }

  // Sending: keep the text in the box until the server has stored it (it then sends a fresh box).
  document.addEventListener("htmx:wsConfigSend", function (event) {
    var error = document.getElementById("composer-error");
    if (error) error.textContent = "";
  });
})();
