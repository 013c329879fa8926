/*
 * driptag demo page: the QA page of `driptag demo`.
 *
 * Part 1 runs at once, before the loader (this script is included without async, ahead of
 * /drip.js): it installs a spy on window._dcq that records every command pushed, copied at push
 * time, both while _dcq is the page's array and after Drip's track.js replaces it with an object.
 * The spy is an accessor on window: the loader and track.js read and assign window._dcq as usual,
 * and every value assigned gets its push wrapped. Nothing is ever kept from the loader: it still
 * looks _dcq up at every call.
 *
 * To show Drip's answer per command, the spy also wraps the success/failure functions the loader
 * puts in a command (recording which one Drip called, and with what) before passing it on.
 *
 * Part 2 (on DOMContentLoaded) is the page: the forms, the two logs, the status badge and the
 * copy button. The forms never reach the server; invalid input is reported next to its field.
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------------------------------------
  // Part 1: spies, before the loader runs.

  var pushes = [];          // every command pushed to _dcq, in order
  var subscribers = [];     // functions told about ("push" | "answer" | "warning", record)
  var currentCall = null;   // the form call running now: its pushes and warnings belong to it
  var pushSeq = 0;
  var wrappedQueues = typeof WeakSet === "function" ? new WeakSet() : null;
  var loaderScriptFailed = false;

  function notify(kind, record) {
    for (var i = 0; i < subscribers.length; i++) {
      try {
        subscribers[i](kind, record);
      } catch (e) {
        // the page's own rendering must never break the recording
      }
    }
  }

  // A JSON copy of a value for display: functions become "[function]", undefined "[undefined]".
  function snapshot(value) {
    try {
      var text = JSON.stringify(value, function (key, v) {
        if (typeof v === "function") return "[function]";
        if (typeof v === "undefined") return "[undefined]";
        if (typeof v === "bigint" || typeof v === "symbol") return "[" + typeof v + "]";
        return v;
      });
      return text === undefined ? "[undefined]" : JSON.parse(text);
    } catch (e) {
      return "[not serialisable]";
    }
  }

  function now() {
    return window.performance && performance.now ? performance.now() : Date.now();
  }

  function recordPush(command) {
    var record = {
      seq: ++pushSeq,
      at: new Date(),
      t: now(),
      command: snapshot(command),
      answer: "none",     // "none": no callback in the command; else pending, success or failure
      response: null,
      late: false,
      call: currentCall
    };
    instrumentCallbacks(command, record);
    pushes.push(record);
    if (currentCall) currentCall.pushes.push(record);
    notify("push", record);
  }

  // The loader puts its own success/failure functions in the payload of identify and track.
  function instrumentCallbacks(command, record) {
    if (!Array.isArray(command)) return;
    for (var i = 1; i < command.length; i++) {
      var payload = command[i];
      if (!payload || typeof payload !== "object" || Array.isArray(payload)) continue;
      ["success", "failure"].forEach(function (kind) {
        var original = payload[kind];
        if (typeof original !== "function") return;
        record.answer = "pending";
        payload[kind] = function (response) {
          onAnswer(record, kind, arguments.length ? response : undefined, arguments.length > 0);
          return original.apply(this, arguments);
        };
      });
    }
  }

  function onAnswer(record, kind, response, withArgument) {
    if (record.answer !== "pending") return;
    record.answer = kind;
    record.response = withArgument ? snapshot(response) : null;
    record.answeredAfter = now() - record.t;
    record.late = !!(record.call && record.call.callbackRan);
    notify("answer", record);
  }

  function spyOn(queue) {
    if (!queue || (typeof queue !== "object" && typeof queue !== "function")) return queue;
    if (wrappedQueues && wrappedQueues.has(queue)) return queue;
    var original = queue.push;
    if (typeof original !== "function") return queue;
    try {
      queue.push = function () {
        for (var i = 0; i < arguments.length; i++) {
          try {
            recordPush(arguments[i]);
          } catch (e) {
            // recording failed: the command still goes through
          }
        }
        return original.apply(this, arguments);
      };
      if (wrappedQueues) wrappedQueues.add(queue);
    } catch (e) {
      // a frozen queue: it cannot be watched, and is left as it is
    }
    return queue;
  }

  (function installQueueSpy() {
    var queue = spyOn(window._dcq || []);
    try {
      Object.defineProperty(window, "_dcq", {
        configurable: true,
        enumerable: true,
        get: function () { return queue; },
        set: function (value) { queue = spyOn(value); }
      });
    } catch (e) {
      // No accessor possible: set the array, and wrap whatever replaces it soon after.
      window._dcq = queue;
      setInterval(function () { spyOn(window._dcq); }, 25);
    }
  })();

  // The loader's and the emulator's console messages, shown in the log.
  (function installConsoleSpy() {
    var console = window.console;
    if (!console) return;
    ["warn", "error"].forEach(function (level) {
      var original = console[level];
      if (typeof original !== "function") return;
      console[level] = function (first) {
        try {
          var text = typeof first === "string" ? first : "";
          if (text.indexOf("[driptag]") === 0 || text.indexOf("[drip emulator]") === 0) {
            var record = { level: level, text: text, at: new Date(), call: currentCall };
            if (currentCall) currentCall.warnings.push(record);
            notify("warning", record);
          }
        } catch (e) {
          // never in the way of the console
        }
        return original.apply(this, arguments);
      };
    });
  })();

  // /drip.js itself not loading (404, blocked): the loader cannot say so, the page can.
  window.addEventListener("error", function (event) {
    var target = event.target;
    if (target && target.id === "driptag-loader") loaderScriptFailed = true;
  }, true);

  // ---------------------------------------------------------------------------------------------
  // Part 2: the page.

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startPage);
  } else {
    startPage();
  }

  function startPage() {
    var config = readConfig();
    var $ = function (id) { return document.getElementById(id); };
    var dcqLog = $("dcq-log");
    var callSeq = 0;

    // -- Status badge --------------------------------------------------------------------------
    var STATUS_TEXT = {
      "loading": "waiting for track.js",
      "ready": "track.js loaded",
      "failed": "track.js did not load (blocked, 404 or CSP)",
      "waiting-consent": "waiting for consent",
      "denied": "consent refused",
      "no-loader": "/drip.js did not load"
    };
    var shownStatus = null;

    function loaderStatus() {
      var api = window.driptag;
      if (api && typeof api.status === "string") return api.status;
      return loaderScriptFailed ? "no-loader" : "loading";
    }

    // track.js failed to load (blocked, 404, CSP): whatever was pushed to _dcq stays there, unsent, and
    // no answer will come. The log says so rather than "waiting for Drip" for ever.
    function trackJsFailed() {
      return loaderStatus() === "failed";
    }

    function refreshStatus() {
      var status = loaderStatus();
      if (status === shownStatus) return;
      shownStatus = status;
      if (status === "failed") markUnanswered();
      var badge = $("status-badge");
      badge.textContent = status === "no-loader" ? "failed" : status;
      badge.setAttribute("data-status", status === "no-loader" ? "failed" : status);
      $("status-detail").textContent = STATUS_TEXT[status] || "";
    }
    setInterval(refreshStatus, 100);

    // -- Forms ---------------------------------------------------------------------------------
    function errorFor(field) {
      return $(field.id + "-error");
    }

    function showError(field, message) {
      field.setAttribute("aria-invalid", "true");
      errorFor(field).textContent = message;
    }

    function clearError(field) {
      field.removeAttribute("aria-invalid");
      var error = errorFor(field);
      if (error) error.textContent = "";
    }

    function clearErrors(form) {
      var fields = form.querySelectorAll("input, textarea, select");
      for (var i = 0; i < fields.length; i++) clearError(fields[i]);
      $(form.id.replace("-form", "") + "-form-error").textContent = "";
    }

    // A JSON object typed into a textarea; blank means {}. Returns undefined (and shows the error)
    // when it is not one.
    function readObject(field, what) {
      var text = field.value.trim();
      if (!text) return {};
      var value;
      try {
        value = JSON.parse(text);
      } catch (e) {
        showError(field, "Invalid JSON in " + what + ": " + jsonProblem(e, text));
        return undefined;
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        showError(field, what + " must be a JSON object, like {\"plan\": \"pro\"}, not " + jsonType(value) + ".");
        return undefined;
      }
      return value;
    }

    function jsonProblem(error, text) {
      var message = String(error && error.message || "not JSON").replace(/^JSON\.parse: /, "");
      var match = /position (\d+)/.exec(message);
      if (match) {
        var before = text.slice(0, Number(match[1])).split("\n");
        message = message.replace(/ in JSON at position \d+.*$/, "") +
          " (line " + before.length + ", column " + (before[before.length - 1].length + 1) + ")";
      }
      return message.length > 160 ? message.slice(0, 157) + "…" : message;
    }

    function jsonType(value) {
      if (value === null) return "null";
      if (Array.isArray(value)) return "an array";
      return "a " + typeof value;
    }

    function facade() {
      var api = window[config.globalName || "analytics"];
      return api && typeof api.identify === "function" && typeof api.track === "function" ? api : null;
    }

    function firstInvalid(form) {
      return form.querySelector("[aria-invalid=true]");
    }

    function rejectIfInvalid(form) {
      var invalid = firstInvalid(form);
      if (invalid) {
        invalid.focus();
        return true;
      }
      return false;
    }

    function noLoader(form) {
      $(form.id.replace("-form", "") + "-form-error").textContent =
        "The loader is not on this page (/drip.js did not load), so nothing was sent.";
    }

    $("identify-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.currentTarget;
      clearErrors(form);
      var userIdField = $("identify-user-id");
      var emailField = $("identify-email");
      var campaignField = $("identify-campaign");
      var traits = readObject($("identify-traits"), "traits");
      var integrations = readObject($("identify-integrations"), "integrations");
      var campaign = readCampaign(campaignField);
      var doubleOptin = $("identify-double-optin").value;
      if (integrations && (campaign !== undefined || doubleOptin)) {
        // An object at integrations.Drip turns Drip on (as in analytics.js), so the override must not be added to a
        // call that has Drip off (Drip: false, or All: false without Drip: true).
        var dripObject = integrations.Drip && typeof integrations.Drip === "object" && !Array.isArray(integrations.Drip);
        if (integrations.Drip === false || integrations.All === false && integrations.Drip !== true && !dripObject) {
          showError(campaignField.value.trim() ? campaignField : $("identify-integrations"),
            "Drip is off for this call (integrations.Drip is false, or All is false without Drip: true): " +
            "turn it on to use the campaign or double opt-in.");
        } else {
          var drip = dripObject ? shallowCopy(integrations.Drip) : {};
          if (campaign !== undefined) drip.campaignId = campaign;
          if (doubleOptin) drip.doubleOptin = doubleOptin === "true";
          integrations.Drip = drip;
        }
      }
      if (rejectIfInvalid(form)) return;
      var api = facade();
      if (!api) return noLoader(form);

      var userId = userIdField.value.trim();
      var email = emailField.value.trim();
      if (email) traits.email = email;
      var options = Object.keys(integrations).length ? { integrations: integrations } : {};
      var args = userId ? [userId, traits, options] : [traits, options];
      send(api, "identify", args);
    });

    // The campaign override: blank (the setting), digits, or none/false (do not subscribe).
    function readCampaign(field) {
      var text = field.value.trim();
      if (!text) return undefined;
      if (/^(none|false|no)$/i.test(text)) return false;
      if (/^[0-9]{1,20}$/.test(text)) return text;
      showError(field, "A campaign ID is 1 to 20 digits, like 7654321; or none, for no subscribe on this call.");
      return undefined;
    }

    $("track-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.currentTarget;
      clearErrors(form);
      var eventField = $("track-event");
      var revenueField = $("track-revenue");
      var timestampField = $("track-timestamp");
      var name = eventField.value.trim();
      if (!name) showError(eventField, "Type an event name, like Order Completed: Drip needs an action name.");
      var properties = readObject($("track-properties"), "properties");
      var integrations = readObject($("track-integrations"), "integrations");
      var revenueText = revenueField.value.trim();
      var revenue;
      if (revenueText) {
        if (/^\$?-?[0-9]+(\.[0-9]+)?$/.test(revenueText)) {
          revenue = Number(revenueText.replace("$", ""));
        } else {
          showError(revenueField, "Revenue is a number of dollars, like 19.99.");
        }
      }
      var timestamp = timestampField.value.trim();
      if (timestamp && isNaN(Date.parse(timestamp))) {
        showError(timestampField, "Not a date the browser can read; use ISO-8601, like 2024-05-01T12:00:00Z.");
      }
      if (rejectIfInvalid(form)) return;
      var api = facade();
      if (!api) return noLoader(form);

      if (revenue !== undefined) properties.revenue = revenue;
      var options = {};
      if (Object.keys(integrations).length) options.integrations = integrations;
      if (timestamp) options.timestamp = timestamp;
      send(api, "track", [name, properties, options]);
    });

    // Ctrl+Enter (Cmd+Enter) in a JSON field sends its form; Enter in other fields does already.
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target && target.tagName === "TEXTAREA" &&
          target.form && !target.readOnly) {
        event.preventDefault();
        if (typeof target.form.requestSubmit === "function") target.form.requestSubmit();
        else target.form.querySelector("[type=submit]").click();
      }
    });

    // Typing in a field clears its error.
    document.addEventListener("input", function (event) {
      var target = event.target;
      if (target && target.getAttribute && target.getAttribute("aria-invalid") === "true") clearError(target);
    });

    // One call through the facade, with a callback that tells when and why it ran (at Drip's answer, or at
    // the loader's callback timeout).
    function send(api, method, args) {
      if (window.driptag && typeof window.driptag.debug === "function") {
        window.driptag.debug($("loader-debug").checked);
      }
      var call = {
        seq: ++callSeq,
        method: method,
        args: snapshot(args),
        at: new Date(),
        t: now(),
        pushes: [],
        warnings: [],
        callbackRan: false
      };
      call.view = renderCall(call);
      var callback = function () {
        if (call.callbackRan) return;
        call.callbackRan = true;
        call.callbackAfter = now() - call.t;
        // Decided now: an answer that comes later does not make the callback "after Drip's answer".
        call.answeredFirst = call.pushes.some(function (p) { return p.answer === "success" || p.answer === "failure"; });
        updateCall(call);
        pollSoon();
      };
      currentCall = call;
      try {
        api[method].apply(api, args.concat([callback]));
      } catch (e) {
        call.warnings.push({ level: "error", text: "the call threw: " + (e && e.message), at: new Date() });
      } finally {
        currentCall = null;
      }
      call.returned = true;
      updateCall(call);
      pollSoon();
    }

    // -- The _dcq log ----------------------------------------------------------------------------
    function el(tag, className, text) {
      var node = document.createElement(tag);
      if (className) node.className = className;
      if (text !== undefined && text !== null) node.textContent = text;
      return node;
    }

    function clock(date) {
      function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = "0" + n; return n; }
      return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) + "." +
        pad(date.getMilliseconds(), 3);
    }

    function pretty(value) {
      try {
        var text = JSON.stringify(value, null, 2);
        return text === undefined ? String(value) : text;
      } catch (e) {
        return String(value);
      }
    }

    // A command's payload for display: the loader's success/failure functions are listed apart
    // (as "callbacks") instead of as "[function]" members.
    function withoutCallbacks(payload) {
      if (!payload || typeof payload !== "object" || Array.isArray(payload)) return { value: payload, callbacks: [] };
      var copy = {};
      var callbacks = [];
      Object.keys(payload).forEach(function (key) {
        if ((key === "success" || key === "failure") && payload[key] === "[function]") callbacks.push(key);
        else copy[key] = payload[key];
      });
      callbacks.sort().reverse();  // "success and failure"
      return { value: copy, callbacks: callbacks };
    }

    function payloadView(payloads) {
      var texts = [];
      var callbacks = [];
      payloads.forEach(function (payload) {
        var split = withoutCallbacks(payload);
        texts.push(pretty(split.value));
        callbacks = callbacks.concat(split.callbacks);
      });
      var fragment = document.createDocumentFragment();
      fragment.appendChild(el("pre", "code payload", texts.join("\n")));
      if (callbacks.length) {
        fragment.appendChild(el("p", "callbacks", "with the loader's " + callbacks.join(" and ") + " callbacks"));
      }
      return fragment;
    }

    // A response on one line, wrapping: { "success": true, "visitor_uuid": "…" }
    function oneLine(value) {
      try {
        return JSON.stringify(value, null, 1).replace(/\n\s*/g, " ");
      } catch (e) {
        return String(value);
      }
    }

    function literal(value) {
      var text = pretty(value);
      return text === "\"[function]\"" ? "callback" : text;
    }

    function callSource(call) {
      var parts = [];
      for (var i = 0; i < call.args.length; i++) parts.push(literal(call.args[i]));
      parts.push("callback");
      return (config.globalName || "analytics") + "." + call.method + "(" + parts.join(", ") + ")";
    }

    // Newest first, so the last call is in sight without scrolling; at most 300 entries.
    function addEntry(list, node) {
      list.insertBefore(node, list.firstChild);
      var empty = $(list.id.replace("-log", "-empty"));
      if (empty) empty.hidden = true;
      while (list.children.length > 300) list.removeChild(list.lastChild);
    }

    function renderCall(call) {
      var item = el("li", "entry call");
      item.setAttribute("data-call", String(call.seq));
      item.setAttribute("data-method", call.method);
      var head = el("div", "entry-head");
      head.appendChild(el("span", "method", call.method));
      head.appendChild(el("span", "seq", "call " + call.seq));
      head.appendChild(el("time", "time", clock(call.at)));
      item.appendChild(head);
      var source = el("pre", "code call-source", callSource(call));
      item.appendChild(source);
      var list = el("ol", "pushes");
      item.appendChild(list);
      var notes = el("div", "notes");
      item.appendChild(notes);
      var outcome = el("p", "outcome", "callback: waiting");
      outcome.setAttribute("data-outcome", "waiting");
      item.appendChild(outcome);
      addEntry(dcqLog, item);
      return { item: item, list: list, notes: notes, outcome: outcome };
    }

    function updateCall(call) {
      var view = call.view;
      view.notes.textContent = "";
      if (call.returned && !call.pushes.length) {
        view.item.setAttribute("data-pushed", "0");
        view.notes.appendChild(el("p", "notice nothing-pushed",
          "Nothing was pushed to _dcq." + (call.method === "identify" ?
            " The loader sends identify only with an e-mail (traits.email, or a userId that is an e-mail address)." : "")));
      }
      for (var i = 0; i < call.warnings.length; i++) {
        view.notes.appendChild(el("p", "notice warning", call.warnings[i].text));
      }
      var outcome = view.outcome;
      if (call.callbackRan) {
        var ms = Math.round(call.callbackAfter) + " ms";
        if (call.answeredFirst) {
          outcome.textContent = "callback ran after Drip's answer, " + ms + " after the call";
          outcome.setAttribute("data-outcome", "answered");
        } else {
          var why = !call.pushes.length ? "Drip did not answer, nothing was sent" :
            trackJsFailed() ? "track.js did not load, so Drip will not answer" : "Drip did not answer in time";
          outcome.textContent = "callback ran after the timeout (" + config.callbackTimeout + " ms): " + why +
            " · " + ms;
          outcome.setAttribute("data-outcome", "timeout");
        }
      }
    }

    function renderPush(record) {
      var command = record.command;
      var name = Array.isArray(command) && typeof command[0] === "string" ? command[0] : "(not a command)";
      var item = el("li", "push");
      item.setAttribute("data-command", name);
      item.setAttribute("data-answer", record.answer);
      var head = el("div", "push-head");
      head.appendChild(el("span", "label", "_dcq.push"));
      head.appendChild(el("span", "command-name", name));
      if (name === "track" && typeof command[1] === "string") head.appendChild(el("span", "event-name", command[1]));
      var answer = el("span", "answer");
      head.appendChild(answer);
      item.appendChild(head);
      var payload = Array.isArray(command) ? command.slice(name === "track" ? 2 : 1) : [command];
      item.appendChild(payloadView(payload));
      var response = el("p", "response");
      item.appendChild(response);
      var view = { item: item, answer: answer, response: response };
      updatePush(record, view);
      return view;
    }

    // What a push shows: Drip's answer, or that none will come because track.js did not load.
    function pushState(record) {
      var answered = record.answer === "success" || record.answer === "failure";
      return !answered && trackJsFailed() ? "unanswered" : record.answer;
    }

    function updatePush(record, view) {
      var state = pushState(record);
      view.item.setAttribute("data-answer", state);
      view.answer.className = "answer answer-" + state;
      var text = {
        pending: "waiting for Drip",
        unanswered: "will not be answered",
        success: "success",
        failure: "failure",
        none: "no callback"
      }[state];
      view.answer.textContent = text + (record.late ? " (after the timeout)" : "");
      view.response.textContent = "";
      if (state === "success" || state === "failure") {
        view.response.textContent = (record.response === null ? "Drip called " + record.answer + "() with no argument" :
          record.answer + " " + oneLine(record.response)) + " · " + Math.round(record.answeredAfter) + " ms";
      } else if (state === "unanswered") {
        view.response.textContent = "track.js did not load, so this command stays in _dcq: Drip never gets it.";
      } else if (state === "none") {
        view.response.textContent = "The loader passes no callback here; see what Drip received.";
      }
    }

    // Pushes shown before track.js failed, to show as unanswered once it has (a failed track.js stays failed;
    // later pushes are shown unanswered from the start).
    var openPushes = [];

    function markUnanswered() {
      for (var i = 0; i < openPushes.length; i++) {
        var open = openPushes[i];
        updatePush(open.record, open.view);
        if (open.record.call && open.record.call.view) updateCall(open.record.call);
      }
      openPushes = [];
    }

    var pushViews = typeof WeakMap === "function" ? new WeakMap() : null;

    function showPush(record) {
      var view = renderPush(record);
      if (pushViews) pushViews.set(record, view);
      if (shownStatus !== "failed") openPushes.push({ record: record, view: view });
      if (record.call && record.call.view) {
        record.call.view.list.appendChild(view.item);
      } else {
        var item = el("li", "entry lone");
        var head = el("div", "entry-head");
        head.appendChild(el("span", "method", "page code"));
        head.appendChild(el("time", "time", clock(record.at)));
        item.appendChild(head);
        var list = el("ol", "pushes");
        list.appendChild(view.item);
        item.appendChild(list);
        addEntry(dcqLog, item);
      }
    }

    function showWarning(record) {
      if (record.call) {
        if (record.call.view) updateCall(record.call);
        return;
      }
      var item = el("li", "entry lone");
      var head = el("div", "entry-head");
      head.appendChild(el("span", "method", record.level === "error" ? "error" : "warning"));
      head.appendChild(el("time", "time", clock(record.at)));
      item.appendChild(head);
      item.appendChild(el("p", "notice warning", record.text));
      addEntry(dcqLog, item);
    }

    subscribers.push(function (kind, record) {
      if (kind === "push") {
        showPush(record);
      } else if (kind === "answer") {
        var view = pushViews && pushViews.get(record);
        if (view) updatePush(record, view);
        if (record.call && record.call.view) updateCall(record.call);
        pollSoon();
      } else if (kind === "warning") {
        showWarning(record);
      }
    });
    // What was pushed before the page was ready (page code in <head>, for example).
    for (var p = 0; p < pushes.length; p++) showPush(pushes[p]);
    refreshStatus();

    $("dcq-clear").addEventListener("click", function () {
      dcqLog.textContent = "";
      $("dcq-empty").hidden = false;
    });

    // -- The emulator's collector --------------------------------------------------------------
    var emulatorLog = $("emulator-log");
    var lastReport = 0;
    var polling = false;
    var pollTimer = null;

    function poll() {
      if (!config.collector || polling) return;
      polling = true;
      var url = config.collector + "?account=" + encodeURIComponent(config.account) + "&after=" + lastReport;
      fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("the collector answered " + response.status);
          return response.json();
        })
        .then(function (reports) {
          $("emulator-error").textContent = "";
          for (var i = 0; i < reports.length; i++) {
            if (reports[i].n > lastReport) {
              lastReport = reports[i].n;
              showReport(reports[i]);
            }
          }
        })
        .catch(function (error) {
          $("emulator-error").textContent = "Cannot read the collector: " + (error && error.message || "network error") +
            ". Is the demo server still running?";
        })
        .then(function () { polling = false; });
    }

    function pollSoon() {
      if (!config.collector) return;
      clearTimeout(pollTimer);
      pollTimer = setTimeout(poll, 60);
    }

    function showReport(report) {
      var command = Array.isArray(report.command) ? report.command : [];
      var name = typeof command[0] === "string" ? command[0] : "(not a command)";
      var answer = typeof report.answer === "string" ? report.answer : "none";
      var item = el("li", "entry report");
      item.setAttribute("data-command", name);
      item.setAttribute("data-answer", answer);
      var head = el("div", "entry-head");
      head.appendChild(el("span", "method", name));
      if (name === "track" && typeof command[1] === "string") head.appendChild(el("span", "event-name", command[1]));
      head.appendChild(el("span", "seq", "#" + report.seq));
      var emulator = window.dripEmulator;
      if (report.page && (!emulator || emulator.page !== report.page)) head.appendChild(el("span", "tag", "other page"));
      var badge = el("span", "answer answer-" + answer, answer);
      head.appendChild(badge);
      item.appendChild(head);
      var payload = command.slice(name === "track" ? 2 : 1);
      item.appendChild(payloadView(payload));
      var note;
      if (answer === "none") {
        note = name === "subscribe" ? "Unknown campaign: Drip does nothing (no request, no callback)." :
          "No answer: Drip does nothing for this command.";
      } else if (report.response === null || report.response === undefined) {
        note = "Drip answered " + answer + "() with no argument.";
      } else {
        note = answer + " " + oneLine(report.response);
      }
      item.appendChild(el("p", "response", note));
      addEntry(emulatorLog, item);
    }

    if (config.collector) {
      poll();
      setInterval(poll, 500);
      $("emulator-clear").addEventListener("click", function () {
        var button = this;
        button.disabled = true;
        fetch(config.collector, { method: "DELETE" })
          .then(function (response) {
            if (!response.ok) throw new Error("the collector answered " + response.status);
            emulatorLog.textContent = "";
            $("emulator-empty").hidden = false;
            $("emulator-error").textContent = "";
          })
          .catch(function (error) {
            $("emulator-error").textContent = "Could not clear the collector: " + (error && error.message);
          })
          .then(function () { button.disabled = false; });
      });
    }

    // -- The snippet ---------------------------------------------------------------------------
    var copyStatus = $("copy-status");
    var copyTimer = null;

    function copied(message) {
      copyStatus.textContent = message;
      clearTimeout(copyTimer);
      copyTimer = setTimeout(function () { copyStatus.textContent = ""; }, 4000);
    }

    function copyBySelection(text) {
      var area = $("snippet-text");
      area.focus();
      area.select();
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (e) {
        ok = false;
      }
      copied(ok ? "Copied " + text.length.toLocaleString("en-US") + " characters" :
        "Selected: press Ctrl+C (⌘C) to copy");
    }

    $("copy-snippet").addEventListener("click", function () {
      var text = $("snippet-text").value;
      if (navigator.clipboard && typeof navigator.clipboard.writeText === "function") {
        navigator.clipboard.writeText(text).then(function () {
          copied("Copied " + text.length.toLocaleString("en-US") + " characters");
        }, function () {
          copyBySelection(text);
        });
      } else {
        copyBySelection(text);
      }
    });
  }

  function readConfig() {
    try {
      return JSON.parse(document.getElementById("demo-config").textContent);
    } catch (e) {
      return {};
    }
  }
})();
