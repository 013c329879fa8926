/*
 * driptag Drip emulator: an offline stand-in for Drip's track.js and its servers.
 *
 * It reproduces what the real script does, as far as a page can observe it:
 *   - reads window._dcs.account (without it: logs "No account specified" and stops);
 *   - defines window._dc at once, then "fetches its configuration" (waits configDelay ms) and only
 *     then replaces the window._dcq array with a plain object {push, initialize} and runs the
 *     commands that were queued in the array, in order;
 *   - runs commands one after another (the next starts when the previous has answered), consuming
 *     each command array with shift() and adding _action to the properties object of a track;
 *   - answers identify / track / subscribe like Drip's servers would, after `latency` ms.
 *
 * Instrumentation (not part of Drip): window.dripEmulator.received lists every command taken, and
 * each answered command is POSTed, in order, to the collector (config.collector).
 *
 * Configuration: window.dripEmulatorDefaults (written by the server in front of this file) merged
 * with window.dripEmulatorOptions (set by a page before this script loads, to override per page):
 *   configDelay (ms, default 50), latency (ms, default 5), campaigns (array of campaign-id strings),
 *   collector (URL string, or null/false: do not report).
 *
 * Plain ES5 on purpose. The emulator never throws into the page: every entry point catches.
 */
(function (window, document) {
  "use strict";

  var VERSION = "1.0.0";
  var BUILTIN = { configDelay: 50, latency: 5, campaigns: [], collector: "/emulator/events" };
  var MAX_CENTS = 2147483647;
  var MAX_COPY_DEPTH = 32;
  var EMAIL = /^[^\s@]+@[^\s@]+$/;
  var DRIP_METHODS = ["identify", "track", "subscribe", "unsubscribe", "showForm", "hideForm"];
  var hasOwn = Object.prototype.hasOwnProperty;
  var toTag = Object.prototype.toString;

  try {
    boot();
  } catch (e) {
    logError("boot failed", e);
  }

  function boot() {
    // 1. The account. Without one, Drip's track.js logs this exact message and stops.
    var dcs = window._dcs;
    var rawAccount = dcs && typeof dcs === "object" ? dcs.account : undefined;
    if ((typeof rawAccount !== "string" || rawAccount === "") &&
        !(typeof rawAccount === "number" && isFinite(rawAccount))) {
      console.log("No account specified");
      return;
    }
    var account = String(rawAccount);

    // 3. A second copy of track.js on the same page (for example Drip's own snippet added after
    // driptag's) finds window._dc already defined and does nothing at all: it neither defines
    // anything nor takes commands, so no command is ever run twice.
    if (window._dc) {
      return;
    }

    // 2. Configuration, read once.
    var config = readConfig(window.dripEmulatorDefaults, window.dripEmulatorOptions);
    var cookieName = "_drip_client_" + (/^[0-9A-Za-z_-]+$/.test(account) ? account : encodeURIComponent(account));
    var pageId = randomHex(16);
    var now = window.performance && typeof window.performance.now === "function"
      ? function () { return window.performance.now(); }
      : function () { return new Date().getTime(); };

    var state = {
      configured: false,
      busy: false,      // a command is running and has not answered yet
      running: false,   // run() is on the stack
      queue: [],        // {record, command} waiting to run, in reception order
      early: [],        // direct _dc calls made before configuration when _dcq is not an array
      seq: 0
    };

    var emulator = {
      version: VERSION,
      account: account,
      page: pageId,
      config: safeCopy(config),
      configured: false,
      startedAt: now(),
      configuredAt: null,
      received: []
    };
    window.dripEmulator = emulator;

    // 4. window._dc exists at once; each method is callable directly and behaves like a push.
    var dc = {};
    for (var i = 0; i < DRIP_METHODS.length; i++) {
      dc[DRIP_METHODS[i]] = directCall(DRIP_METHODS[i]);
    }
    window._dc = dc;

    // 5. "Fetch the configuration", then swap the queue and run what was queued.
    setTimeout(function () {
      try {
        configure();
      } catch (e) {
        logError("configuration failed", e);
      }
    }, config.configDelay);

    function configure() {
      var old = window._dcq;
      var pending = [];
      if (isArray(old)) {
        // Consumed from the old array: a page that kept a reference to it and pushes there after
        // this point is not heard any more (which is why a loader must look _dcq up every time).
        while (old.length) {
          pending.push(old.shift());
        }
      }
      window._dcq = { push: push, initialize: initialize };
      state.configured = true;
      emulator.configured = true;
      emulator.configuredAt = now();
      for (var k = 0; k < pending.length; k++) {
        receive(pending[k]);
      }
      for (k = 0; k < state.early.length; k++) {
        receive(state.early[k]);
      }
      state.early = [];
      run();
    }

    // The new _dcq.push: takes any number of command arrays, like Array.prototype.push.
    function push() {
      for (var k = 0; k < arguments.length; k++) {
        try {
          receive(arguments[k]);
        } catch (e) {
          logError("push failed", e);
        }
      }
      run();
    }

    // Drip's object has initialize(); the emulator is initialized already, so it does nothing.
    function initialize() {}

    function directCall(name) {
      return function () {
        try {
          var command = [name];
          for (var k = 0; k < arguments.length; k++) {
            command.push(arguments[k]);
          }
          if (state.configured) {
            push(command);
          } else if (isArray(window._dcq)) {
            // Before the configuration: wait in the page's queue like any other command.
            window._dcq.push(command);
          } else {
            state.early.push(command);
          }
        } catch (e) {
          logError(name + " failed", e);
        }
      };
    }

    // Take a command: record a copy made now, before anything mutates it, and queue it.
    function receive(command) {
      state.seq += 1;
      var record = {
        seq: state.seq,
        account: account,
        command: safeCopy(command),
        answer: "pending",
        response: null
      };
      emulator.received.push(record);
      state.queue.push({ record: record, command: command });
    }

    // 6. The serial queue: the next command starts when the previous one has answered.
    // A command answered synchronously (answer "none") lets this loop go on instead of recursing,
    // so a long run of such commands cannot exhaust the stack.
    function run() {
      if (state.running) {
        return;
      }
      state.running = true;
      try {
        while (!state.busy && state.configured && state.queue.length) {
          var item = state.queue.shift();
          var answer = answerer(item.record);
          state.busy = true;
          try {
            execute(item.command, answer);
          } catch (e) {
            // A hostile command (a throwing getter, a frozen array...): answered "none".
            logError("command " + item.record.seq + " failed", e);
            answer("none");
          }
        }
      } finally {
        state.running = false;
      }
    }

    // Returns answer(kind, response, callback, withArgument): records the answer, calls the
    // callback after `latency` ms (kind "none": at once, with no callback), reports it, and lets
    // the queue go on.
    function answerer(record) {
      var done = false;
      return function (kind, response, callback, withArgument) {
        if (done) {
          return;
        }
        done = true;
        if (kind === "none") {
          finish(record, kind, null, null);
          return;
        }
        setTimeout(function () {
          finish(record, kind, response, function () {
            if (typeof callback === "function") {
              if (withArgument) {
                callback(safeCopy(response));
              } else {
                callback();
              }
            }
          });
        }, config.latency);
      };
    }

    function finish(record, kind, response, callCallback) {
      try {
        record.answer = kind;
        record.response = response === null || response === undefined ? null : safeCopy(response);
        report(record);
        if (callCallback) {
          try {
            callCallback();
          } catch (e) {
            // The page's callback threw: Drip's queue must go on regardless.
            logError("a " + record.answer + " callback threw", e);
          }
        }
      } catch (e2) {
        logError("answer failed", e2);
      }
      state.busy = false;
      run();
    }

    // 7-11. One command. `answer` must be called exactly once.
    function execute(command, answer) {
      if (!isArray(command)) {
        answer("none");
        return;
      }
      var name = command.shift();
      if (name === "identify") {
        identify(command.shift(), answer);
      } else if (name === "track") {
        var action = command.shift();
        track(action, command.shift(), answer);
      } else if (name === "subscribe") {
        subscribe(command.shift(), answer);
      } else if (name === "unsubscribe") {
        unsubscribe(command.shift(), answer);
      } else if (name === "showForm" || name === "hideForm") {
        form(command.shift(), answer);
      } else {
        answer("none");
      }
    }

    // identify({email, ...fields, success, failure})
    function identify(payload, answer) {
      if (!isObject(payload)) {
        answer("failure", null, undefined, false);
        return;
      }
      var failure = payload.failure;
      var email = payload.email;
      var emailGiven = email !== undefined && email !== null && email !== "";
      var vid = visitorId();
      if ((emailGiven && !(typeof email === "string" && EMAIL.test(email))) || (!emailGiven && !vid)) {
        // An invalid e-mail, or a new visitor without one: failure() with no argument, like Drip.
        answer("failure", null, failure, false);
        return;
      }
      if (!vid) {
        vid = randomHex(32);
      }
      setVisitorId(vid);
      answer("success", { success: true, visitor_uuid: vid, anonymous: !emailGiven }, payload.success, true);
    }

    // track(action, {...properties, value?, occurred_at?, success, failure})
    function track(action, properties, answer) {
      var props = properties;
      if (props === undefined || props === null) {
        props = {};
      }
      if (!isObject(props)) {
        answer("failure", failed("invalid_properties", "Properties must be an object"), undefined, true);
        return;
      }
      if (typeof action !== "string" || !/\S/.test(action)) {
        answer("failure", failed("missing_action", "An action name is required"), props.failure, true);
        return;
      }
      // What Drip's track.js does: it writes the action into the object it was given.
      props._action = action;
      if (hasOwn.call(props, "value") && props.value !== undefined) {
        var v = props.value;
        if (!(typeof v === "number" && isFinite(v) && Math.floor(v) === v && v >= 0 && v <= MAX_CENTS)) {
          answer("failure", failed("invalid_value",
            "value must be an integer number of cents from 0 to 2147483647"), props.failure, true);
          return;
        }
      }
      if (hasOwn.call(props, "occurred_at") && props.occurred_at !== undefined) {
        var at = props.occurred_at;
        if (typeof at !== "string" || isNaN(Date.parse(at))) {
          answer("failure", failed("invalid_occurred_at", "occurred_at must be an ISO-8601 time"),
            props.failure, true);
          return;
        }
      }
      var response = { success: true };
      var vid = visitorId();
      if (vid) {
        response.visitor_uuid = vid;
      }
      answer("success", response, props.success, true);
    }

    // subscribe({campaign_id, fields: {email, ...}, double_optin?, success, failure})
    function subscribe(payload, answer) {
      if (!isObject(payload)) {
        answer("none");
        return;
      }
      var campaign = payload.campaign_id;
      var known = (typeof campaign === "string" || typeof campaign === "number") &&
        indexOf(config.campaigns, String(campaign)) >= 0;
      if (!known) {
        // Drip: an unknown campaign does nothing at all, no request and no callback. The emulator
        // still records and reports it (answer "none") so that QA can see it.
        answer("none");
        return;
      }
      var fields = payload.fields;
      var email = isObject(fields) ? fields.email : undefined;
      if (typeof email !== "string" || !EMAIL.test(email)) {
        answer("failure", failed("missing_email", "fields.email must be an e-mail address"), payload.failure, true);
        return;
      }
      if (hasOwn.call(payload, "double_optin") && payload.double_optin !== undefined &&
          typeof payload.double_optin !== "boolean") {
        answer("failure", failed("invalid_double_optin", "double_optin must be true or false"),
          payload.failure, true);
        return;
      }
      var response = { success: true, campaign_id: String(campaign), email: email };
      if (typeof payload.double_optin === "boolean") {
        response.double_optin = payload.double_optin;
      }
      answer("success", response, payload.success, true);
    }

    // unsubscribe({campaign_id?, email?, success, failure}): needs an e-mail or a known visitor.
    function unsubscribe(payload, answer) {
      var p = isObject(payload) ? payload : {};
      var email = p.email;
      if (!(typeof email === "string" && EMAIL.test(email)) && !visitorId()) {
        answer("failure", failed("unknown_subscriber", "No e-mail and no known visitor"), p.failure, true);
        return;
      }
      var response = { success: true };
      if (p.campaign_id !== undefined && p.campaign_id !== null) {
        response.campaign_id = String(p.campaign_id);
      }
      answer("success", response, p.success, true);
    }

    // showForm / hideForm: the emulator has no forms to show; it answers success.
    function form(payload, answer) {
      var p = isObject(payload) ? payload : {};
      answer("success", { success: true }, p.success, true);
    }

    function failed(code, message) {
      return { success: false, errors: [{ code: code, message: message }] };
    }

    // The visitor cookie: _drip_client_{account} = "vid=<32 hex>".
    function visitorId() {
      var parts = String(document.cookie || "").split(/;\s*/);
      for (var k = 0; k < parts.length; k++) {
        var eq = parts[k].indexOf("=");
        if (eq > 0 && parts[k].slice(0, eq) === cookieName) {
          var value = parts[k].slice(eq + 1);
          // Drip's real cookie is URL-encoded (twice); accept that as well as the plain form.
          for (var d = 0; d < 2; d++) {
            try {
              value = decodeURIComponent(value);
            } catch (e) {
              break;
            }
          }
          var m = /(?:^|[;&])vid=([0-9A-Za-z-]+)/.exec(value);
          return m ? m[1] : null;
        }
      }
      return null;
    }

    function setVisitorId(vid) {
      document.cookie = cookieName + "=vid=" + vid + "; path=/; max-age=63072000; SameSite=Lax";
    }

    // 12. Report answered records to the collector. One POST at a time, so they arrive in order; the
    // records answered meanwhile go together in the next POST (a JSON list of at most REPORT_BYTES bytes
    // of UTF-8: the collector refuses bodies over 64 KiB). A command too big to fit is still reported,
    // with its payload replaced by a note saying so.
    var REPORT_BYTES = 60000;
    var unsent = [], posting = false;

    function report(record) {
      if (!config.collector || typeof window.fetch !== "function" || typeof window.Promise !== "function") {
        return;
      }
      var entry = {
        seq: record.seq,
        account: record.account,
        command: record.command,
        answer: record.answer,
        response: record.response,
        page: pageId,
        url: String(window.location.href)
      };
      try {
        var json = JSON.stringify(entry), bytes = utf8Bytes(json);
        if (bytes > REPORT_BYTES) {
          entry.command = [Array.isArray(record.command) ? record.command[0] : null,
            "(not reported: " + bytes + " bytes of JSON, over the collector's limit)"];
          entry.response = null;
          json = JSON.stringify(entry);
          bytes = utf8Bytes(json);
        }
        unsent.push({ json: json, bytes: bytes });
      } catch (e) {
        logError("report not serialisable", e);
        return;
      }
      if (!posting) postUnsent();
    }

    function postUnsent() {
      var batch = [], size = 2;
      while (unsent.length && (!batch.length || size + unsent[0].bytes + 1 <= REPORT_BYTES)) {
        size += unsent[0].bytes + 1;
        batch.push(unsent.shift().json);
      }
      posting = batch.length > 0;
      if (!posting) return;
      var next = function () { postUnsent(); };
      var body = "[" + batch.join(",") + "]";
      try {
        window.fetch(config.collector, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: body,
          keepalive: size < 20000, // survives the page's unload; Chromium caps keepalive bodies at 64 KiB
          credentials: "same-origin"
        }).then(next, next);
      } catch (e) {
        next();
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Helpers (no page state).

  // The length of `text` in UTF-8 (JSON.stringify leaves no lone surrogate: a pair is 4 bytes).
  function utf8Bytes(text) {
    var bytes = 0;
    for (var i = 0; i < text.length; i++) {
      var code = text.charCodeAt(i);
      bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code >= 0xd800 && code < 0xdc00 ? 4 : code >= 0xdc00 && code < 0xe000 ? 0 : 3;
    }
    return bytes;
  }

  function readConfig(defaults, options) {
    var out = {
      configDelay: BUILTIN.configDelay,
      latency: BUILTIN.latency,
      campaigns: [],
      collector: BUILTIN.collector
    };
    var sources = [defaults, options];
    for (var s = 0; s < sources.length; s++) {
      var src = sources[s];
      if (!isObject(src)) {
        continue;
      }
      if (hasOwn.call(src, "configDelay") && isDelay(src.configDelay)) {
        out.configDelay = src.configDelay;
      }
      if (hasOwn.call(src, "latency") && isDelay(src.latency)) {
        out.latency = src.latency;
      }
      if (hasOwn.call(src, "campaigns") && isArray(src.campaigns)) {
        out.campaigns = [];
        for (var c = 0; c < src.campaigns.length; c++) {
          var id = src.campaigns[c];
          if (typeof id === "string" || typeof id === "number") {
            out.campaigns.push(String(id));
          }
        }
      }
      if (hasOwn.call(src, "collector")) {
        var collector = src.collector;
        if (collector === null || collector === false) {
          out.collector = null;
        } else if (typeof collector === "string" && collector !== "") {
          out.collector = collector;
        }
      }
    }
    return out;
  }

  function isDelay(v) {
    return typeof v === "number" && isFinite(v) && v >= 0;
  }

  function isArray(v) {
    return toTag.call(v) === "[object Array]";
  }

  function isObject(v) {
    return v !== null && typeof v === "object" && !isArray(v);
  }

  function indexOf(list, value) {
    for (var k = 0; k < list.length; k++) {
      if (list[k] === value) {
        return k;
      }
    }
    return -1;
  }

  // A JSON-safe deep copy of whatever the page handed over, made without ever throwing:
  // functions become "[function]"; values JSON cannot carry are shown as markers ("[undefined]",
  // "[NaN]", "[symbol]", "[cycle]", "[Date <iso>]", "[RegExp]", "[unreadable]", ...), so QA sees
  // exactly what the loader pushed.
  function safeCopy(value) {
    try {
      return copyValue(value, [], 0);
    } catch (e) {
      return "[unreadable]";
    }
  }

  function copyValue(value, seen, depth) {
    var type = typeof value;
    if (value === null || type === "boolean" || type === "string") {
      return value;
    }
    if (type === "number") {
      return isFinite(value) ? value : "[" + String(value) + "]";
    }
    if (type === "undefined") {
      return "[undefined]";
    }
    if (type === "function") {
      return "[function]";
    }
    if (type !== "object") {
      return "[" + type + "]";
    }
    if (indexOf(seen, value) >= 0) {
      return "[cycle]";
    }
    if (depth >= MAX_COPY_DEPTH) {
      return "[too deep]";
    }
    var tag = toTag.call(value);
    if (tag === "[object Date]") {
      var time = value.getTime();
      return isNaN(time) ? "[Invalid Date]" : "[Date " + value.toISOString() + "]";
    }
    var out;
    seen.push(value);
    try {
      if (tag === "[object Array]") {
        out = [];
        for (var k = 0; k < value.length; k++) {
          out.push(readCopy(value, k, seen, depth));
        }
      } else if (tag === "[object Object]") {
        out = {};
        var keys = Object.keys(value);
        for (var j = 0; j < keys.length; j++) {
          // defineProperty, so that a key named "__proto__" stays a plain, visible key.
          Object.defineProperty(out, keys[j], {
            value: readCopy(value, keys[j], seen, depth),
            enumerable: true,
            writable: true,
            configurable: true
          });
        }
      } else {
        out = "[" + tag.slice(8, -1) + "]";
      }
    } finally {
      seen.pop();
    }
    return out;
  }

  function readCopy(container, key, seen, depth) {
    try {
      return copyValue(container[key], seen, depth + 1);
    } catch (e) {
      return "[unreadable]";
    }
  }

  function randomHex(length) {
    var out = "";
    var crypto = window.crypto;
    if (crypto && typeof crypto.getRandomValues === "function") {
      var bytes = new Uint8Array(Math.ceil(length / 2));
      crypto.getRandomValues(bytes);
      for (var k = 0; k < bytes.length; k++) {
        out += (bytes[k] < 16 ? "0" : "") + bytes[k].toString(16);
      }
    } else {
      while (out.length < length) {
        out += Math.floor(Math.random() * 16).toString(16);
      }
    }
    return out.slice(0, length);
  }

  function logError(what, error) {
    try {
      if (window.console && typeof window.console.error === "function") {
        window.console.error("[drip emulator] " + what + ": " + describe(error));
      }
    } catch (e) {
      // nothing left to do
    }
  }

  function describe(error) {
    try {
      return error && typeof error.message === "string" ? error.message : toTag.call(error);
    } catch (e) {
      return "unknown error";
    }
  }
})(window, document);
