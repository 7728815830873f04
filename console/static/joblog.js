// Follows a running job's log on the run page: polls the console for the
// chunks after the last one shown until the run ends.
(function () {
  var pre = document.getElementById("log");
  if (!pre || pre.dataset.live !== "true") return;
  var run = pre.dataset.run, next = parseInt(pre.dataset.next, 10) || 0;
  var status = document.getElementById("run-status");
  function poll() {
    fetch("/jobs/runs/" + run + "/log?from=" + next, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (d.text) { pre.textContent += d.text; pre.scrollTop = pre.scrollHeight; }
        next = d.next;
        if (status) { status.textContent = d.status; status.className = "tag status-" + d.status; }
        if (d.status === "pending" || d.status === "running" || d.text) setTimeout(poll, 500);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 500);
})();
