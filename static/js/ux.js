// lettachat: the page as people use it every day. Where focus goes after each action, Escape,
// the delete confirmation. No inline scripts anywhere (CSP).
(function () {
  "use strict";

  function byId(id) { return document.getElementById(id); }

  function visible(el) {
    return !!el && el.isConnected && !el.disabled && el.getClientRects().length > 0;
  }

  function focusEl(el, select) {
    if (!el) return false;
    el.focus({ preventScroll: el.id !== "composer-input" });
    if (select && typeof el.select === "function") el.select();
    else if (el.id === "composer-input" && el.setSelectionRange) {
      el.setSelectionRange(el.value.length, el.value.length);
    }
    return document.activeElement === el;
  }

  function composerBox() {
    var box = byId("composer-input");
    return box && !box.disabled ? box : null;
  }

  function focusLost() {
    var active = document.activeElement;
    return !active || active === document.body || !active.isConnected;
  }

  // --- Focus: after every swap it lands where the person's next action is -------------------------
  // htmx replaces the element that had the focus (the message box is swapped for a fresh one when
  // the server has stored the message; Stop leaves with the reply status; a switch replaces the
  // thread), and the browser then drops focus to <body>. The next action decides where it goes.

  var lastFocused = null;
  var lastFocusId = "";
  document.addEventListener("focusin", function (event) {
    var target = event.target;
    lastFocused = target instanceof Element ? target : null;
    lastFocusId = target && target.id ? target.id : "";
  });

  var next = null;  // what the action in flight wants focused when its swap settles
  function want(kind, detail, source) {
    next = { kind: kind, detail: detail || "", source: source || null };
  }

  // Whether a settle is the answer to the action that asked (the panels load themselves after a
  // page or thread arrives: their answers must not use up what the action wanted).
  function answers(event) {
    if (!next || !next.source || !event || event.type !== "htmx:afterSettle") return true;
    var detail = event.detail || {};
    var elt = detail.elt || (detail.requestConfig && detail.requestConfig.elt);
    if (!elt) return true;
    return elt === next.source || next.source.contains(elt) || elt.contains(next.source);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.id === "composer") want("composer");
    else if (form.closest(".thread-rename")) want("renamed", form.getAttribute("data-conversation"), form);
    else if (form.closest("#delete-dialog")) want("list", "", form);
    else if (form.querySelector("#new-conversation, #start-conversation")) want("composer", "", form);
    else if (form.querySelector("#stop, #retry-stalled")) want("composer");
  }, true);
  document.addEventListener("click", function (event) {
    var link = event.target instanceof Element ? event.target.closest("a[hx-get]") : null;
    if (link && link.closest("#sidebar")) want("composer", "", link);
  }, true);

  function renamedItem(letta) {
    var link = letta ? document.querySelector("#conv-" + CSS.escape(letta) + " > a") : null;
    if (visible(link)) return link;
    var title = byId("thread-title");
    if (title) title.setAttribute("tabindex", "-1");
    return title;
  }

  function listTarget() {
    var first = document.querySelector("#sidebar .conversation-list > li > a");
    if (visible(first)) return first;
    var create = byId("new-conversation");
    if (visible(create)) return create;
    var opener = byId("open-sidebar");
    if (visible(opener)) return opener;
    var list = document.querySelector("#sidebar .conversation-list");
    if (list) list.setAttribute("tabindex", "-1");
    return list;
  }

  function settle(event) {
    var wanted = answers(event) ? next : null;
    if (wanted && wanted.kind === "renamed" && byId("rename-error")) {
      focusEl(byId("rename-input"), false);  // the title was refused: back to fixing it
      next = null;
      return;
    }
    if (wanted && wanted.kind === "renamed") {
      next = null;
      focusEl(renamedItem(wanted.detail), false);
      return;
    }
    if (wanted && wanted.kind === "list") {
      next = null;
      focusEl(listTarget(), false);
      return;
    }
    if (wanted && wanted.kind === "composer") {
      var box = composerBox();
      if (box) {
        next = null;
        focusEl(box, false);
        return;
      }
    }
    // Nothing asked for: act only if the focused element was swapped away (a click on the page's
    // text, a selection, stays as it is). The same control if it came back, else the message box.
    if (!focusLost() || !lastFocused || lastFocused.isConnected) return;
    var again = lastFocusId ? byId(lastFocusId) : null;
    if (visible(again) && focusEl(again, false)) return;
    var fallback = composerBox();
    if (fallback && focusEl(fallback, false)) return;
    var thread = byId("thread");
    if (thread && lastFocusId) {
      thread.setAttribute("tabindex", "-1");
      focusEl(thread, false);
    }
  }

  document.addEventListener("htmx:afterSettle", settle);
  document.addEventListener("htmx:oobAfterSwap", function () { queueMicrotask(settle); });
  document.addEventListener("htmx:wsAfterMessage", settle);

  // --- Rename: prefilled with the title shown now (it may have changed since the page came) -------

  // Opened by the click itself (mouse, Enter, Space), filled and focused at once: the browser's
  // own opening and its toggle event come later, as tasks of their own, and keys typed meanwhile
  // went to the Rename button (the first letters of a quick typist's title were lost), or the
  // title typed was put back to the old one. Filled once per opening; an opening without a click
  // (a script setting .open) is filled and focused by the toggle.
  function prefillRename(details) {
    var input = details.querySelector("#rename-input");
    var title = byId("thread-title");
    if (input && title && !byId("rename-error")) input.value = title.textContent.trim();
    details.setAttribute("data-prefilled", "");
    return input;
  }
  document.addEventListener("click", function (event) {
    var summary = event.target instanceof Element ? event.target.closest(".thread-rename > summary") : null;
    if (!summary || summary.parentNode.open) return;
    var details = summary.parentNode;
    event.preventDefault();
    details.open = true;
    focusEl(prefillRename(details), true);
  }, true);
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.classList.contains("thread-rename")) return;
    if (!details.open) {
      details.removeAttribute("data-prefilled");
      return;
    }
    var input = details.hasAttribute("data-prefilled")
      ? details.querySelector("#rename-input") : prefillRename(details);
    // Already in the box (typing has begun): leave the caret and the text as they are.
    if (input && document.activeElement !== input) focusEl(input, true);
  }, true);

  // --- Escape closes what is open: a popover (rename, download), a drawer ------------------------

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    var open = document.querySelectorAll("details.popover[open]");
    if (open.length) {
      event.preventDefault();
      open.forEach(function (details) {
        var had = details.contains(document.activeElement);
        details.open = false;
        if (had) details.querySelector("summary").focus();
      });
      return;
    }
    document.dispatchEvent(new CustomEvent("lettachat:escape", { cancelable: true }));
  });

  // A popover closes when the focus or a click goes elsewhere.
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.popover[open]").forEach(function (details) {
      if (!details.contains(event.target)) details.open = false;
    });
  });

  // --- Delete: an accessible confirmation naming the conversation's title as it is now -----------

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var dialog = byId("delete-dialog");
    if (target.closest("#delete") && dialog && typeof dialog.showModal === "function") {
      event.preventDefault();
      var title = byId("thread-title");
      var name = dialog.querySelector(".delete-dialog-name");
      if (name && title) name.textContent = title.textContent.trim();
      dialog.showModal();
      focusEl(byId("delete-cancel"), false);
    } else if (target.closest("#delete-cancel") && dialog) {
      dialog.close();
    }
  });
  document.addEventListener("close", function (event) {
    if (event.target && event.target.id === "delete-dialog" && !next) {
      focusEl(byId("delete"), false);
    }
  }, true);

  // --- Drawers: on narrow screens (and zoomed in) the conversation list and memory/info --------

  var drawerButtons = { "sidebar": "open-sidebar", "side-panels": "open-panels" };

  function drawerOpen() { return document.body.getAttribute("data-drawer") || ""; }

  function openDrawer(id) {
    document.body.setAttribute("data-drawer", id);
    var scrim = byId("drawer-scrim");
    if (scrim) scrim.hidden = false;
    Object.keys(drawerButtons).forEach(function (key) {
      var button = byId(drawerButtons[key]);
      if (button) button.setAttribute("aria-expanded", key === id ? "true" : "false");
    });
    var drawer = byId(id);
    if (!drawer) return;
    var first = drawer.querySelector("a[aria-current='page'], a, button:not(.drawer-close), summary, input");
    if (id === "sidebar") first = drawer.querySelector(".conversation-list a[aria-current='page']") || first;
    if (!focusEl(first, false)) focusEl(drawer, false);
  }

  function closeDrawer(returnFocus) {
    var id = drawerOpen();
    if (!id) return;
    document.body.removeAttribute("data-drawer");
    var scrim = byId("drawer-scrim");
    if (scrim) scrim.hidden = true;
    var button = byId(drawerButtons[id]);
    if (button) button.setAttribute("aria-expanded", "false");
    if (returnFocus && button && visible(button)) focusEl(button, false);
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var button = target.closest(".drawer-button");
    if (button) {
      var id = button.getAttribute("aria-controls");
      if (drawerOpen() === id) closeDrawer(true);
      else openDrawer(id);
    } else if (target.id === "drawer-scrim" || target.closest(".drawer-close")) {
      closeDrawer(true);
    }
  });
  document.addEventListener("lettachat:escape", function (event) {
    if (!event.defaultPrevented) closeDrawer(true);
  });
  // A conversation opened (or made, or deleted) from the list: the drawer has done its work.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "thread") closeDrawer(false);
  });
  // Back to a wide window: no drawer is open any more.
  var wide = window.matchMedia("(min-width: 901px)");
  wide.addEventListener("change", function () { if (wide.matches) closeDrawer(false); });

  // --- The thread's actions: behind one button on narrow screens ---------------------------------

  function setActions(header, open, returnFocus) {
    var toggle = header.querySelector("#thread-actions-toggle");
    header.classList.toggle("actions-open", open);
    if (toggle) toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      var first = header.querySelector("#thread-actions summary, #thread-actions button:not([disabled])");
      focusEl(first, false);
    } else if (returnFocus && toggle) {
      focusEl(toggle, false);
    }
  }
  document.addEventListener("click", function (event) {
    var toggle = event.target instanceof Element ? event.target.closest("#thread-actions-toggle") : null;
    if (!toggle) return;
    var header = toggle.closest(".thread-header");
    setActions(header, !header.classList.contains("actions-open"), true);
  });
  document.addEventListener("lettachat:escape", function (event) {
    var header = document.querySelector(".thread-header.actions-open");
    if (!header || !visible(byId("thread-actions-toggle"))) return;
    event.preventDefault();
    setActions(header, false, true);
  });

  // --- Times: relative ("5 minutes ago"), exact on hover and focus, in the person's time zone -----

  // The formatters are made when first needed: the first one a page makes loads the browser's
  // locale data (20-45 ms), so it waits until the thread is on screen (below).
  var formats = null;
  function formatters() {
    if (formats) return formats;
    formats = {
      relative: window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null,
      exact: new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" }),
      dayAndTime: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }),
      withYear: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" }),
    };
    return formats;
  }

  function describe(date, now) {
    var f = formatters(), relative = f.relative;
    var seconds = Math.round((now - date) / 1000);
    if (relative && seconds < 45) return relative.format(0, "second").replace(/^./, function (c) { return c.toUpperCase(); });
    if (relative && seconds < 3600) return relative.format(-Math.max(1, Math.round(seconds / 60)), "minute");
    if (relative && seconds < 86400) return relative.format(-Math.round(seconds / 3600), "hour");
    return (date.getFullYear() === new Date(now).getFullYear() ? f.dayAndTime : f.withYear).format(date);
  }

  // Every time on the page (each is marked as written), or only those not yet written.
  function formatTimes(onlyNew) {
    var times = document.querySelectorAll(
      ".msg-meta time[datetime]" + (onlyNew === true ? ":not([data-written])" : ""));
    if (!times.length) return;
    var now = Date.now(), exact = formatters().exact;
    times.forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      var full = exact.format(date);
      if (el.title !== full) el.title = full;
      var text = describe(date, now);
      if (el.textContent !== text) el.textContent = text;
      if (!el.hasAttribute("data-written")) el.dataset.written = "";  // a change only once
    });
  }
  // On a page's load, after its first frame: the thread is shown first (with the times as the
  // server wrote them, in UTC), then its times in the person's own words.
  document.addEventListener("DOMContentLoaded", function () {
    requestAnimationFrame(function () { setTimeout(formatTimes, 0); });
  });
  document.addEventListener("htmx:afterSettle", formatTimes);
  // A socket's message (a streamed piece, mostly) brings a new message at most: its time only,
  // not the whole thread's again for every piece of a reply.
  document.addEventListener("htmx:wsAfterMessage", function () { formatTimes(true); });
  setInterval(formatTimes, 30000);

  // --- One "current" mark; the document's title follows the conversation -------------------------

  function oneCurrent() {
    var marked = document.querySelectorAll('[aria-current="page"]');
    if (marked.length < 2) return;
    // A conversation is open: it is the current page, not its agent.
    var item = document.querySelector('.conversation-list a[aria-current="page"]');
    marked.forEach(function (el) { if (el !== item) el.removeAttribute("aria-current"); });
  }

  function followTitle() {
    var thread = byId("thread");
    if (!thread) return;
    var suffix = thread.getAttribute("data-title-suffix") || "lettachat";
    var title = byId("thread-title");
    var text = title ? title.textContent.trim() + " · " + suffix : suffix;
    if (document.title !== text) document.title = text;
  }

  function marks() { oneCurrent(); followTitle(); }
  document.addEventListener("DOMContentLoaded", marks);
  document.addEventListener("htmx:afterSettle", marks);
  document.addEventListener("htmx:oobAfterSwap", marks);
  document.addEventListener("htmx:wsAfterMessage", marks);

  // --- Streaming that looks live -----------------------------------------------------------------
  // A placeholder for the reply as soon as a message goes (the server's draft replaces it), and
  // the reply's text painted progressively between Letta's batches (it sends a background run's
  // output about every 0.5 s): each piece is revealed over the next ~0.35 s, so the page is never
  // more than one batch behind, and shows it whole the moment the stored reply replaces the draft.
  // Not under prefers-reduced-motion: there each piece shows as it comes.

  var reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  var PAINT_MS = 350;
  var TICK_MS = 30;

  function placeholder() { return byId("reply-placeholder"); }

  function removePlaceholder() {
    var p = placeholder();
    if (p) p.remove();
  }

  document.addEventListener("htmx:wsBeforeSend", function (event) {
    if (event.defaultPrevented) return;
    var elt = event.target;
    if (!(elt instanceof Element) || elt.id !== "composer") return;
    var list = byId("messages");
    if (!list || placeholder()) return;
    var article = document.createElement("article");
    article.id = "reply-placeholder";
    article.className = "msg msg-placeholder";
    article.setAttribute("aria-label", "Reply, on its way");
    var body = document.createElement("div");
    body.className = "msg-body";
    var dots = document.createElement("span");
    dots.className = "typing";
    dots.textContent = "Sending";
    body.appendChild(dots);
    article.appendChild(body);
    list.appendChild(article);
    document.dispatchEvent(new CustomEvent("lettachat:painted"));
  });

  function tidyPlaceholder() {
    var p = placeholder();
    if (!p) return;
    var status = byId("reply-status");
    var busy = status && status.getAttribute("data-busy") === "true";
    var dots = p.querySelector(".typing");
    if (busy && dots && dots.textContent === "Sending") dots.textContent = "Thinking";
    var draft = document.querySelector("#messages .msg-streaming");
    var over = status && !busy && status.querySelector(".reply-finished");
    var error = byId("composer-error");
    var refused = error && error.textContent.trim();
    if (draft || over || refused) { removePlaceholder(); return; }
    if (p.nextElementSibling) p.parentNode.appendChild(p);  // stays last, under the message sent
  }
  document.addEventListener("htmx:wsAfterMessage", tidyPlaceholder);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "thread") removePlaceholder();
  });

  var queues = [];  // {target, text, shown, deadline}
  var timer = 0;

  function queueFor(target) {
    for (var i = 0; i < queues.length; i++) if (queues[i].target === target) return queues[i];
    var q = { target: target, text: "", deadline: 0 };
    queues.push(q);
    return q;
  }

  // How many characters of ``text`` to reveal now, from ``shown``, to have all of it on screen by
  // ``deadline``: an even share of what is left per tick, ended at a word's end where one is
  // near, so words are not cut mid-way.
  function nextStep(text, shown, deadline, now) {
    var left = Math.max(1, Math.round((deadline - now) / TICK_MS));
    var count = Math.max(1, Math.ceil((text.length - shown) / left));
    var space = text.indexOf(" ", shown + count);
    if (space !== -1 && space - (shown + count) < 6) count = space + 1 - shown;
    return count;
  }

  function paint() {
    var now = performance.now();
    paintReplies(now);
    queues = queues.filter(function (q) { return q.target.isConnected && q.text.length > 0; });
    queues.forEach(function (q) {
      var count = nextStep(q.text, 0, q.deadline, now);
      q.target.appendChild(document.createTextNode(q.text.slice(0, count)));
      q.text = q.text.slice(count);
    });
    queues = queues.filter(function (q) { return q.text.length > 0; });
    document.dispatchEvent(new CustomEvent("lettachat:painted"));
    if (!queues.length && !replies.length) { clearInterval(timer); timer = 0; }
  }

  // A reply is streamed formatted (chat/rendering.py): its finished blocks are appended to
  // #stream-<id>-done, the block being written replaces #stream-<id>-open. The page keeps the
  // whole of it off screen and shows a growing prefix of its text, cut inside the formatted
  // blocks, so the reveal is as smooth as for plain text and formatting never flickers.

  var replies = [];  // {body, full, shown, deadline}

  function replyFor(body) {
    for (var i = 0; i < replies.length; i++) if (replies[i].body === body) return replies[i];
    var r = { body: body, full: body.cloneNode(true), shown: body.textContent.length, deadline: 0 };
    replies.push(r);
    return r;
  }

  // A copy of ``full`` with only its first ``count`` characters of text (and no element after).
  function prefixOf(full, count) {
    var copy = full.cloneNode(true);
    var walker = document.createTreeWalker(copy, NodeFilter.SHOW_TEXT);
    var left = count;
    var node;
    while ((node = walker.nextNode())) {
      if (node.data.length <= left) { left -= node.data.length; continue; }
      node.data = node.data.slice(0, left);
      for (var cut = node; cut && cut !== copy; cut = cut.parentNode) {
        while (cut.nextSibling) cut.parentNode.removeChild(cut.nextSibling);
      }
      break;
    }
    return copy;
  }

  function paintReplies(now) {
    replies = replies.filter(function (r) { return r.body.isConnected; });
    replies.forEach(function (r) {
      var text = r.full.textContent;
      if (r.shown >= text.length) return;
      r.shown = Math.min(text.length, r.shown + nextStep(text, r.shown, r.deadline, now));
      var shown = prefixOf(r.full, r.shown);
      r.body.replaceChildren.apply(r.body, Array.prototype.slice.call(shown.childNodes));
    });
    replies = replies.filter(function (r) { return r.shown < r.full.textContent.length; });
  }

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var detail = event.detail;
    var target = detail && detail.target;
    var part = target && /^stream-.*-(done|open)$/.exec(target.id || "");
    if (!part || reducedMotion.matches || !target.closest(".msg-streaming")) return;
    detail.shouldSwap = false;
    var r = replyFor(target.parentNode);
    var into = r.full.querySelector(part[1] === "done" ? ".md-done" : ".md-open");
    var nodes = Array.prototype.slice.call(detail.fragment.cloneNode(true).childNodes);
    if (part[1] === "done") nodes.forEach(function (n) { into.appendChild(n); });
    else into.replaceChildren.apply(into, nodes);
    r.shown = Math.min(r.shown, r.full.textContent.length);
    r.deadline = performance.now() + PAINT_MS;
    if (!timer) timer = setInterval(paint, TICK_MS);
  });

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var detail = event.detail;
    var target = detail && detail.target;
    if (!target || !/^stream-.*-text$/.test(target.id || "") || reducedMotion.matches) return;
    if (!target.closest(".msg-streaming")) return;
    var text = detail.fragment ? detail.fragment.textContent : "";
    if (!text) return;
    detail.shouldSwap = false;
    var q = queueFor(target);
    q.text += text;
    q.deadline = performance.now() + PAINT_MS;
    if (!timer) timer = setInterval(paint, TICK_MS);
  });
})();
