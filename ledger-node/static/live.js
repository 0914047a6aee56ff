// Live updates for the node's pages. The server sends a "change" event on /live when
// something the page shows may have changed; the page fetches itself again and swaps its
// <main> (or reloads, for pages without one). Without EventSource, or while the channel is
// down, it reloads every 15 s. The page works without this script; it only keeps it fresh.
(function () {
  'use strict';
  var me = document.currentScript;
  var coi = me ? new URL(me.src, location.href).searchParams.get('coi') : null;
  var url = '/live' + (coi ? '?coi=' + encodeURIComponent(coi) : '');
  var busy = false, again = false, timer = null;
  function mark(text) {
    var s = document.getElementById('live-state');
    if (s) { s.textContent = text; }
  }
  function refresh() {
    if (busy) { again = true; return; }
    var main = document.getElementById('main');
    if (!main) { location.reload(); return; }
    busy = true;
    fetch(location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.getElementById('main');
        if (fresh) {
          document.getElementById('main').replaceWith(document.importNode(fresh, true));
          document.title = doc.title;
          mark('Live: updated ' + new Date().toISOString().slice(11, 19) + ' UTC.');
        }
      })
      .catch(function () { mark('Live updates interrupted; retrying.'); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  function poll() { if (timer === null) { timer = setInterval(refresh, 15000); } }
  if (!window.EventSource) { poll(); return; }
  var es = new EventSource(url);
  es.addEventListener('change', refresh);
  es.addEventListener('signed-out', function () { es.close(); location.reload(); });
  es.onopen = function () {
    mark('Live.');
    if (timer !== null) { clearInterval(timer); timer = null; }
  };
  es.onerror = function () { mark('Live channel down; reloading every 15 s.'); poll(); };
})();
