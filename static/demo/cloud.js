/*
 * driptag demo page: the cloud mode panel.
 *
 * The forms post to the demo server (/cloud/identify, /cloud/track), which builds the Segment call and
 * sends it to the relay, server side, as a back end would; a field the server cannot use comes back
 * with its error, shown next to the field. Twice a second the page asks /cloud/state for what the relay
 * holds (each call: pending with its attempts and next try, delivered, skipped with the reason, or a
 * dead letter with Drip's error) and what the Drip API emulator received since the last look.
 */
(function () {
  "use strict";

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }

  function start() {
    var $ = function (id) { return document.getElementById(id); };
    var config = readConfig();
    if (!config.enabled || !$("cloud-calls-log")) return;

    var callsLog = $("cloud-calls-log");
    var apiLog = $("cloud-api-log");
    var callViews = {};          // seq -> the entry shown for that call
    var lastRequest = 0;         // the emulator's arrival index of the newest request shown
    var polling = false;
    var pollTimer = null;

    // -- Small helpers --------------------------------------------------------------------------
    function el(tag, className, text) {
      var node = document.createElement(tag);
      if (className) node.className = className;
      if (text !== undefined && text !== null) node.textContent = text;
      return node;
    }

    function pretty(value) {
      try {
        var text = JSON.stringify(value, null, 2);
        return text === undefined ? String(value) : text;
      } catch (e) {
        return String(value);
      }
    }

    function oneLine(value) {
      if (typeof value === "string") return value;
      try {
        return JSON.stringify(value);
      } catch (e) {
        return String(value);
      }
    }

    function clock(iso) {
      var match = /T(\d\d:\d\d:\d\d\.\d\d\d)/.exec(iso || "");
      return match ? match[1] + " UTC" : "";
    }

    function seconds(value) {
      return value < 10 ? value.toFixed(1) + " s" : Math.round(value) + " s";
    }

    function plural(n, one, many) {
      return n + " " + (n === 1 ? one : many);
    }

    function postJson(url, body, method) {
      return fetch(url, {
        method: method || "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store"
      }).then(function (response) {
        if (response.status === 204) return { status: 204, body: null };
        return response.json().then(function (data) {
          return { status: response.status, body: data };
        }, function () {
          return { status: response.status, body: null };
        });
      });
    }

    // -- Forms: errors next to their fields -----------------------------------------------------
    function fieldFor(form, name) {
      return name ? form.querySelector("[name='" + name.replace(/[^A-Za-z]/g, "") + "']") : null;
    }

    function clearErrors(form) {
      var fields = form.querySelectorAll("input, textarea, select");
      for (var i = 0; i < fields.length; i++) {
        fields[i].removeAttribute("aria-invalid");
        var error = $(fields[i].id + "-error");
        if (error) error.textContent = "";
      }
      $(form.id.replace("-form", "") + "-form-error").textContent = "";
    }

    function showErrors(form, errors) {
      var first = null;
      Object.keys(errors || {}).forEach(function (name) {
        var field = fieldFor(form, name);
        var place = field ? $(field.id + "-error") : null;
        if (field && place) {
          field.setAttribute("aria-invalid", "true");
          place.textContent = errors[name];
          if (!first) first = field;
        } else {
          $(form.id.replace("-form", "") + "-form-error").textContent = (name ? name + ": " : "") + errors[name];
        }
      });
      if (first) first.focus();
    }

    function formValues(form) {
      var values = {};
      var fields = form.querySelectorAll("input, textarea, select");
      for (var i = 0; i < fields.length; i++) values[fields[i].name] = fields[i].value;
      return values;
    }

    // A JSON field is checked here first, so a mistake is shown at once, without a round trip; the server
    // checks everything again (this page is not its only client).
    function jsonErrors(form) {
      var errors = {};
      var areas = form.querySelectorAll("textarea");
      for (var i = 0; i < areas.length; i++) {
        var name = areas[i].name;
        var text = areas[i].value.trim();
        if (!text) continue;
        var value;
        try {
          value = JSON.parse(text);
        } catch (e) {
          errors[name] = "Invalid JSON in " + name + ": " +
            String(e && e.message || "not JSON").replace(/^JSON\.parse: /, "");
          continue;
        }
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          errors[name] = name + " must be a JSON object, like {\"plan\": \"pro\"}, not " +
            (value === null ? "null" : Array.isArray(value) ? "an array" : "a " + typeof value) + ".";
        }
      }
      return errors;
    }

    function submitting(form, url, done) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        clearErrors(form);
        var mistakes = jsonErrors(form);
        if (Object.keys(mistakes).length) {
          showErrors(form, mistakes);
          return;
        }
        var button = form.querySelector("button[type=submit]");
        button.disabled = true;
        postJson(url, formValues(form))
          .then(function (result) {
            if (result.status === 400 && result.body && result.body.errors) {
              showErrors(form, result.body.errors);
            } else if (result.status >= 300) {
              showErrors(form, { "": (result.body && result.body.error) ||
                "the demo server answered " + result.status });
            } else if (done) {
              done(result.body);
            }
          })
          .catch(function (error) {
            showErrors(form, { "": "Cannot reach the demo server: " + (error && error.message || "network error") });
          })
          .then(function () {
            button.disabled = false;
            pollSoon();
          });
      });
      // Ctrl+Enter in a JSON field sends, as in the device-mode forms.
      var areas = form.querySelectorAll("textarea");
      for (var i = 0; i < areas.length; i++) {
        areas[i].addEventListener("keydown", function (event) {
          if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
            event.preventDefault();
            form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit", { cancelable: true }));
          }
        });
      }
      // Editing a field clears its error.
      form.addEventListener("input", function (event) {
        var field = event.target;
        if (field.getAttribute("aria-invalid") === "true") {
          field.removeAttribute("aria-invalid");
          var error = $(field.id + "-error");
          if (error) error.textContent = "";
        }
      });
    }

    submitting($("cloud-identify-form"), "/cloud/identify");
    submitting($("cloud-track-form"), "/cloud/track");
    submitting($("cloud-fault-form"), "/cloud/faults");

    $("cloud-fault-clear").addEventListener("click", function () {
      postJson("/cloud/faults", undefined, "DELETE").then(pollSoon, pollSoon);
    });
    $("cloud-calls-clear").addEventListener("click", function () {
      postJson("/cloud/calls", undefined, "DELETE").then(function () {
        callsLog.textContent = "";
        callViews = {};
        $("cloud-calls-empty").hidden = false;
      });
    });
    $("cloud-api-clear").addEventListener("click", function () {
      postJson("/cloud/received", undefined, "DELETE").then(function () {
        apiLog.textContent = "";
        $("cloud-api-empty").hidden = false;
      });
    });

    // -- What the relay holds --------------------------------------------------------------------
    var STATE_TEXT = {
      pending: "pending",
      delivered: "delivered",
      dead: "dead letter",
      skipped: "skipped",
      refused: "refused by the relay"
    };
    var STATE_CLASS = {
      pending: "pending", delivered: "success", dead: "failure", skipped: "none", refused: "failure"
    };

    function badge(state) {
      return el("span", "answer answer-" + (STATE_CLASS[state] || "none"), STATE_TEXT[state] || state);
    }

    function recordTitle(record) {
      if (record.kind === "campaign") return "campaign " + record.campaignId + " subscription";
      return record.kind === "subscriber" ? "subscriber upsert" : "event";
    }

    function requestTrail(requests) {
      return requests.map(function (r) {
        return "#" + r.n + " " + (r.status === null ? "no answer" : r.status) + (r.fault ? " (injected)" : "");
      }).join(" → ");
    }

    function recordDetail(record) {
      var trail = record.requests.length ? "Drip API requests: " + requestTrail(record.requests) : "";
      if (record.state === "pending") {
        var parts = [];
        if (record.attempts) {
          parts.push(plural(record.attempts, "attempt", "attempts") + " failed" +
            (record.error ? ": " + record.error : ""));
        }
        parts.push(record.retryIn === null || record.retryIn === undefined ? "sending now" :
          "next try in " + seconds(record.retryIn));
        if (trail) parts.push(trail);
        return parts.join(" · ");
      }
      if (record.state === "dead") {
        return "in the dead letters, with Drip's error: " + record.error + (trail ? " · " + trail : "");
      }
      return trail || "sent to Drip";
    }

    function renderCall(call) {
      var item = el("li", "entry cloud-call");
      item.setAttribute("data-call", String(call.seq));
      item.setAttribute("data-method", call.method);
      var head = el("div", "entry-head");
      head.appendChild(el("span", "method", call.method));
      if (call.method === "track" && call.message && typeof call.message.event === "string") {
        head.appendChild(el("span", "event-name", call.message.event));
      }
      head.appendChild(el("span", "seq", "call " + call.seq));
      var state = el("span", "answer");
      head.appendChild(state);
      item.appendChild(head);
      var source = el("details", "sent");
      source.appendChild(el("summary", null, "POST " + call.path + " " + clock(call.at)));
      source.appendChild(el("pre", "code payload", pretty(call.message)));
      item.appendChild(source);
      var answer = el("p", "response relay-answer");
      item.appendChild(answer);
      var records = el("ol", "records");
      item.appendChild(records);
      callsLog.insertBefore(item, callsLog.firstChild);
      $("cloud-calls-empty").hidden = true;
      return { item: item, state: state, answer: answer, records: records, signature: null };
    }

    function showCall(call) {
      var view = callViews[call.seq] || (callViews[call.seq] = renderCall(call));
      var signature = JSON.stringify([call.state, call.records.map(function (r) {
        return [r.state, r.attempts, r.retryIn, r.error, r.requests];
      })]);
      if (signature === view.signature) return;
      view.signature = signature;
      view.item.setAttribute("data-state", call.state);
      view.state.replaceWith(view.state = badge(call.state));
      view.answer.textContent = "relay answered " + (call.status === null ? "nothing" : call.status) + " " +
        oneLine(call.answer);
      view.records.textContent = "";
      if (call.skipped) {
        var skipped = el("li", "record");
        skipped.setAttribute("data-state", "skipped");
        skipped.appendChild(el("p", "notice", "Skipped: " + call.skipped + ". Nothing goes to Drip for this call."));
        view.records.appendChild(skipped);
      }
      call.records.forEach(function (record) {
        var line = el("li", "record");
        line.setAttribute("data-kind", record.kind);
        line.setAttribute("data-state", record.state);
        if (record.attempts !== undefined) line.setAttribute("data-attempts", String(record.attempts));
        var head = el("div", "push-head");
        head.appendChild(el("span", "command-name", recordTitle(record)));
        head.appendChild(badge(record.state));
        line.appendChild(head);
        line.appendChild(el("p", "response record-detail", recordDetail(record)));
        view.records.appendChild(line);
      });
    }

    function showSummary(relay) {
      var summary = $("cloud-summary");
      if (!relay) {
        summary.textContent = "";
        return;
      }
      var parts = [relay.pending + " pending", relay.delivered.lastHour + " delivered in the last hour",
        plural(relay.deadLetters, "dead letter", "dead letters")];
      var skipped = Object.keys(relay.skipped || {});
      if (skipped.length) {
        parts.push("skipped: " + skipped.map(function (k) { return k + " " + relay.skipped[k]; }).join(", "));
      }
      var alerts = [];
      if (relay.backoffFor) {
        alerts.push("backing off after " + plural(relay.failures, "failure", "failures") + ": next try in " +
          seconds(relay.backoffFor));
      }
      if (relay.pausedFor) {
        // The reason is Drip's answer, status first ("429: {...}"): the status says enough here.
        var status = /^(\d{3})\b/.exec(relay.pauseReason || "");
        alerts.push("single-record requests paused " + seconds(relay.pausedFor) + " more" +
          (status ? " after Drip's " + status[1] : ""));
      }
      if (relay.paused) alerts.push("paused: " + relay.paused);
      summary.textContent = parts.join(" · ") + (alerts.length ? " · " + alerts.join(" · ") : "");
      summary.setAttribute("data-alert", alerts.length ? "true" : "false");
    }

    function showFaults(faults) {
      var text = faults.length ? "Pending: " + faults.map(function (f) {
        return f.fault + " for the next " + plural(f.remaining, "call", "calls");
      }).join(", then ") + "." : "No fault pending: the emulator answers as Drip does.";
      var status = $("cloud-faults");
      if (status.textContent !== text) status.textContent = text;
      status.setAttribute("data-pending", faults.length ? "true" : "false");
    }

    // -- What the Drip API emulator received -------------------------------------------------------
    function showRequest(entry) {
      var item = el("li", "entry api-request");
      item.setAttribute("data-n", String(entry.n));
      item.setAttribute("data-status", String(entry.status));
      var head = el("div", "entry-head");
      head.appendChild(el("span", "method", entry.method));
      head.appendChild(el("span", "command-name api-path", entry.path));
      head.appendChild(el("span", "seq", "#" + entry.n));
      if (entry.fault) head.appendChild(el("span", "tag", "injected " + entry.fault));
      var ok = entry.status !== null && entry.status >= 200 && entry.status < 300;
      head.appendChild(el("span", "answer answer-" + (ok ? "success" : "failure"),
        entry.status === null ? "no answer" : String(entry.status)));
      item.appendChild(head);
      item.appendChild(el("pre", "code payload", pretty(entry.body)));
      apiLog.insertBefore(item, apiLog.firstChild);
      while (apiLog.children.length > 300) apiLog.removeChild(apiLog.lastChild);
      $("cloud-api-empty").hidden = true;
    }

    // -- Polling -----------------------------------------------------------------------------------
    function poll() {
      if (polling) return;
      polling = true;
      fetch("/cloud/state?after=" + lastRequest, { headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("the demo server answered " + response.status);
          return response.json();
        })
        .then(function (state) {
          $("cloud-error").textContent = state.enabled ? "" : (state.why || "Cloud mode is off.");
          (state.calls || []).forEach(showCall);
          (state.requests || []).forEach(function (entry) {
            if (entry.n > lastRequest) showRequest(entry);
          });
          lastRequest = Math.max(lastRequest, state.last || 0);
          showSummary(state.relay);
          showFaults(state.faults || []);
        })
        .catch(function (error) {
          $("cloud-error").textContent = "Cannot read the relay's state: " +
            (error && error.message || "network error") + ". Is the demo server still running?";
        })
        .then(function () { polling = false; });
    }

    function pollSoon() {
      clearTimeout(pollTimer);
      pollTimer = setTimeout(poll, 30);
    }

    poll();
    setInterval(poll, 500);
  }

  function readConfig() {
    try {
      return JSON.parse(document.getElementById("demo-config").textContent).cloud || {};
    } catch (e) {
      return {};
    }
  }
})();
