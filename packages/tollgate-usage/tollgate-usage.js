// <tollgate-usage>: the API USAGE panel. A framework-free custom element (no dependencies, no
// build step): load this file from the control-plane (`/ui/tollgate-usage.js`) or bundle the
// npm package built from it (packages/tollgate-usage), then use the tag in any page, Angular
// (add CUSTOM_ELEMENTS_SCHEMA), React or plain HTML.
//
//   <tollgate-usage endpoint="https://api.example.com/api/v1/usage" interval="5"></tollgate-usage>
//   panel.apiKey = key;                      // or: panel.tokenProvider = async () => token;
//
// tokenProvider is called before every poll; it may return the key or, better, a usage token
// minted by the page's backend (`POST /api/v1/usage/tokens`), so the key stays off the page.
//
// The key is sent only in the x-api-key header, never in a URL, and kept out of the DOM: set
// it as a property (an `api-key` attribute is read once and removed at once); `apiKey` reads
// back "(set)" or null, never the key. Properties set before this script runs (a framework
// binding, a lazily loaded script) are taken over when the element is defined.
//
// Polling: every `interval` seconds (default 5; `interval="0"`: only when the page calls
// `refresh()`, e.g. from its own polling loop). A refused key (401) stops polling until the key
// or the provider is set again; failures back off exponentially with jitter (at most 60 s, or
// the interval if longer); nothing is fetched while the tab is hidden, and the panel refreshes
// as soon as it is visible again.
//
// The host element's `data-state` says what the panel shows: no-key, loading, ok,
// unauthorized (the key was refused), stale (the last poll failed; older figures shown),
// error (no figures yet and the poll failed). Events, bubbling and composed:
// `tollgate-usage-update` (detail: the usage figures, as the endpoint answered them) after
// every successful poll, and `tollgate-usage-error` (detail: {status, state, message,
// retryIn}) after every failed one.
//
// Looks: CSS custom properties (--tollgate-bg, --tollgate-fg, --tollgate-muted,
// --tollgate-border, --tollgate-track, --tollgate-accent, --tollgate-denied,
// --tollgate-warning, --tollgate-tier-bg, --tollgate-tier-fg, --tollgate-message-bg,
// --tollgate-message-fg, --tollgate-focus, --tollgate-font, --tollgate-radius,
// --tollgate-padding, --tollgate-max-width, --tollgate-chart-height), parts (panel, header,
// title, tier, used, meter, meter-fill, stats, chart, legend, peak, plot, bar, admitted,
// denied, axis, tick, tooltip, message), light and dark following prefers-color-scheme unless
// `theme="light"` or `theme="dark"` says otherwise.
//
// Written without import/export, inside a block, so it also works as a classic script.
{
  const TAG = "tollgate-usage";
  const DEFAULT_INTERVAL = 5; // seconds
  const MAX_BACKOFF = 60; // seconds (or the interval, if longer)
  const FETCH_TIMEOUT = 10_000; // ms
  const UPGRADED_PROPERTIES = ["apiKey", "tokenProvider", "endpoint", "interval"];

  const LIGHT = {
    bg: "#ffffff", fg: "#1f2933", muted: "#616e7c", border: "#d9e2ec", track: "#e4e7eb",
    accent: "#3e7bfa", denied: "#e12d39", warning: "#cb6e17", "tier-bg": "#e0e8f9",
    "tier-fg": "#2d3a8c", "message-bg": "#fffbea", "message-fg": "#8d2b0b", focus: "#1d4ed8",
  };
  const DARK = {
    bg: "#161b22", fg: "#e6edf3", muted: "#9aa5b1", border: "#30363d", track: "#2d333b",
    accent: "#6ea8fe", denied: "#ff6b6b", warning: "#f0b429", "tier-bg": "#243055",
    "tier-fg": "#c5d4ff", "message-bg": "#3b2c0c", "message-fg": "#ffd58a", focus: "#9ec5fe",
  };
  // Each colour is the page's --tollgate-NAME if set, else the palette's default.
  const palette = (colors, scheme) =>
    Object.entries(colors).map(([name, value]) => `--_${name}: var(--tollgate-${name}, ${value});`).join(" ") +
    ` color-scheme: ${scheme};`;

  const STYLE = `
    :host { ${palette(LIGHT, "light")}
      display: block; color: var(--_fg);
      font: var(--tollgate-font, 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif); }
    @media (prefers-color-scheme: dark) { :host(:not([theme="light"])) { ${palette(DARK, "dark")} } }
    :host([theme="dark"]) { ${palette(DARK, "dark")} }
    :host([hidden]) { display: none; }
    * { box-sizing: border-box; }
    .panel { max-width: var(--tollgate-max-width, 560px); padding: var(--tollgate-padding, 16px);
      border: 1px solid var(--_border); border-radius: var(--tollgate-radius, 8px); background: var(--_bg); }
    header { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; margin-bottom: 4px; }
    h2 { font-size: 12px; font-weight: 600; letter-spacing: .08em; text-transform: uppercase; margin: 0; color: var(--_muted); }
    .tier { font-size: 12px; padding: 2px 8px; border-radius: 999px; background: var(--_tier-bg); color: var(--_tier-fg); }
    .tier:empty { display: none; }
    .headline { margin: 0; color: var(--_muted); }
    .big { font-size: 28px; font-weight: 600; color: var(--_fg); }
    .big, dd, .tick, .peak { font-variant-numeric: tabular-nums; }
    .meter { height: 10px; background: var(--_track); border-radius: 5px; overflow: hidden; margin: 8px 0 12px; }
    .meter > div { height: 100%; width: 0; background: var(--_accent); transition: width .3s; }
    .meter[data-level="near"] > div { background: var(--_warning); }
    .meter[data-level="full"] > div { background: var(--_denied); }
    dl { display: grid; grid-template-columns: repeat(auto-fit, minmax(96px, 1fr)); gap: 4px 12px; margin: 0 0 14px; }
    dt { font-size: 11px; color: var(--_muted); text-transform: uppercase; letter-spacing: .04em; }
    dd { margin: 0; font-weight: 600; }
    :host([data-state="stale"]) .figures, :host([data-state="loading"]) .figures { opacity: .55; }
    figure { margin: 0; }
    .chart-head { display: flex; justify-content: space-between; gap: 8px; font-size: 11px; color: var(--_muted); margin-bottom: 4px; }
    .legend { display: flex; gap: 12px; }
    .legend span::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 2px; margin-right: 4px; }
    .legend .key-admitted::before { background: var(--_accent); }
    .legend .key-denied::before { background: var(--_denied); }
    .plot-area { position: relative; }
    .plot { display: flex; align-items: stretch; gap: 1px; height: var(--tollgate-chart-height, 72px);
      border-bottom: 1px solid var(--_border); }
    .minute { flex: 1 1 0; min-width: 0; display: flex; flex-direction: column-reverse; border-radius: 2px 2px 0 0; outline: none; }
    .minute:hover, .minute.active { background: color-mix(in srgb, var(--_accent) 14%, transparent); }
    .minute:focus-visible { outline: 2px solid var(--_focus); outline-offset: 1px; }
    .admitted { background: var(--_accent); }
    .denied { background: var(--_denied); }
    .axis { position: relative; height: 18px; font-size: 11px; color: var(--_muted); }
    .tick { position: absolute; top: 3px; transform: translateX(-50%); white-space: nowrap; }
    .tick::before { content: ""; position: absolute; left: 50%; top: -3px; width: 1px; height: 3px; background: var(--_muted); }
    .tick.start { transform: none; } .tick.start::before { left: 0; }
    .tick.end { transform: translateX(-100%); } .tick.end::before { left: auto; right: 0; }
    .tooltip { position: absolute; bottom: calc(100% + 4px); left: 0; z-index: 1; pointer-events: none;
      padding: 4px 8px; border-radius: 6px; font-size: 12px; white-space: nowrap;
      background: var(--_fg); color: var(--_bg); box-shadow: 0 2px 8px rgb(0 0 0 / .2); }
    .tooltip[hidden] { display: none; }
    .message { padding: 8px; border-radius: 6px; background: var(--_message-bg); color: var(--_message-fg); margin-top: 10px; }
    .message:empty { display: none; }
    @media (prefers-reduced-motion: reduce) { .meter > div { transition: none; } }
    .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
  `;

  // Built once; shared by every panel. Constructable stylesheets are not subject to a page's
  // style-src policy; a <style> element is the fallback where they are missing.
  let sharedSheet = null;
  try {
    sharedSheet = new CSSStyleSheet();
    sharedSheet.replaceSync(STYLE);
  } catch {
    sharedSheet = null;
  }

  // The panel is built with DOM calls, not innerHTML: no markup parsing, so it also runs under
  // a Trusted Types policy, and nothing from the network is ever parsed as HTML.
  function h(tag, attributes = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined) element.setAttribute(name, value);
    }
    element.append(...children);
    return element;
  }

  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const number = (value) => (Number.isFinite(value) ? value.toLocaleString() : "–");
  const duration = (seconds) =>
    seconds < 120 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, "0")} s`;
  const per = (seconds) =>
    seconds === 60 ? "per minute" : seconds === 3600 ? "per hour" : `per ${duration(seconds)}`;

  class TollgateUsageElement extends HTMLElement {
    static observedAttributes = ["endpoint", "interval", "api-key"];

    #key = null;
    #provider = null;
    #connected = false;
    #usage = null;
    #fetchedAt = 0;
    // Bumped whenever what the panel polls for changes: an answer to an older generation is dropped.
    #generation = 0;
    #timer = null;
    #ticker = null;
    #inFlight = null;
    #controller = null;
    #failures = 0;
    #notBefore = 0; // no poll before this time (ms), after a failure
    #refused = false; // the key was refused: no poll until it (or the provider) changes
    #paused = false; // a poll came due while the tab was hidden
    #fields = {};
    #bars = [];
    #history = [];
    #active = -1; // the bar whose tooltip shows
    #hovered = -1;
    #onVisibility = () => this.#visibilityChanged();

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      if (sharedSheet) root.adoptedStyleSheets = [sharedSheet];
      else root.append(h("style", {}, STYLE));
      root.append(this.#build());
      // Properties a page set on the element before it was defined (a framework's binding, a
      // script that ran first) are own properties hiding the setters: take them over.
      for (const name of UPGRADED_PROPERTIES) {
        if (Object.prototype.hasOwnProperty.call(this, name)) {
          const value = this[name];
          delete this[name];
          this[name] = value;
        }
      }
    }

    /** The tenant's API key. Write-only in effect: reads back "(set)" or null, never the key. */
    set apiKey(key) {
      const value = typeof key === "string" ? key.trim() : "";
      this.#key = value || null;
      this.#restart(true);
    }
    get apiKey() {
      return this.#key ? "(set)" : null;
    }

    /** A function returning the key (or a promise of it), called before every poll. */
    set tokenProvider(provider) {
      this.#provider = typeof provider === "function" ? provider : null;
      this.#restart(true);
    }
    get tokenProvider() {
      return this.#provider;
    }

    /** The usage endpoint's URL (the `endpoint` attribute); default `/api/v1/usage`. */
    get endpoint() {
      return this.getAttribute("endpoint") || "/api/v1/usage";
    }
    set endpoint(url) {
      if (url === null || url === undefined || url === "") this.removeAttribute("endpoint");
      else this.setAttribute("endpoint", String(url));
    }

    /** Seconds between polls (the `interval` attribute): default 5, at least 1; 0 polls only on refresh(). */
    get interval() {
      const raw = this.getAttribute("interval");
      if (raw === null || raw.trim() === "") return DEFAULT_INTERVAL;
      const seconds = Number(raw);
      if (!Number.isFinite(seconds) || seconds < 0) return DEFAULT_INTERVAL;
      return seconds === 0 ? 0 : Math.max(1, seconds);
    }
    set interval(seconds) {
      if (seconds === null || seconds === undefined) this.removeAttribute("interval");
      else this.setAttribute("interval", String(seconds));
    }

    /** What the panel shows: no-key, loading, ok, unauthorized, stale or error. */
    get state() {
      return this.dataset.state ?? null;
    }

    /** The last figures received (a copy), or null. */
    get usage() {
      return this.#usage ? structuredClone(this.#usage) : null;
    }

    /**
     * Polls now, for a page that drives the panel from its own polling loop; resolves when the
     * poll is over. Does nothing without a key, after the key was refused (set it again to
     * retry), while backing off after a failure, or while the tab is hidden (it polls when
     * the tab shows again).
     */
    refresh() {
      if (!this.#connected || this.#refused || (!this.#key && !this.#provider)) return Promise.resolve();
      if (document.hidden) {
        this.#paused = true;
        return Promise.resolve();
      }
      if (Date.now() < this.#notBefore) return Promise.resolve();
      return this.#poll();
    }

    connectedCallback() {
      this.#connected = true;
      document.addEventListener("visibilitychange", this.#onVisibility);
      clearInterval(this.#ticker);
      this.#ticker = setInterval(() => document.hidden || this.#renderCountdown(), 1000);
      this.#restart(false);
    }

    disconnectedCallback() {
      this.#connected = false;
      document.removeEventListener("visibilitychange", this.#onVisibility);
      clearInterval(this.#ticker);
      this.#ticker = null;
      this.#stop();
    }

    attributeChangedCallback(name, old, value) {
      if (name === "api-key") {
        // Out of the DOM first, then kept like a property.
        if (value !== null) {
          this.removeAttribute("api-key");
          this.apiKey = value;
        }
        return;
      }
      if (old !== value) this.#restart(false);
    }

    // Drops whatever is pending or in flight.
    #stop() {
      this.#generation += 1;
      clearTimeout(this.#timer);
      this.#timer = null;
      this.#controller?.abort();
      this.#controller = null;
      this.#inFlight = null;
    }

    // Starts over: after a new key or provider (`forget`: older figures are not this key's),
    // a new endpoint or interval, or on connection.
    #restart(forget) {
      this.#stop();
      this.#failures = 0;
      this.#notBefore = 0;
      this.#refused = false;
      this.#paused = false;
      if (forget) this.#usage = null;
      if (!this.#connected) return;
      if (!this.#key && !this.#provider) {
        this.#usage = null;
        this.#show("no-key", "No API key set.");
        return;
      }
      if (!this.#usage) this.#show("loading", "");
      if (document.hidden) this.#paused = true;
      else this.#poll();
    }

    #poll() {
      if (this.#inFlight) return this.#inFlight;
      clearTimeout(this.#timer);
      this.#timer = null;
      const poll = this.#fetchUsage(this.#generation).finally(() => {
        if (this.#inFlight === poll) this.#inFlight = null;
      });
      this.#inFlight = poll;
      return poll;
    }

    // The next poll, `ms` from now (none if 0), unless something changed meanwhile.
    #schedule(generation, ms) {
      if (generation !== this.#generation || !this.#connected || !(ms > 0)) return;
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => {
        this.#timer = null;
        if (generation !== this.#generation) return;
        if (document.hidden) this.#paused = true;
        else this.#poll();
      }, ms);
    }

    #visibilityChanged() {
      if (document.hidden) {
        // Whatever is due waits for the tab to show again.
        if (this.#timer) {
          clearTimeout(this.#timer);
          this.#timer = null;
          this.#paused = true;
        }
      } else if (this.#paused && this.#connected) {
        this.#paused = false;
        const wait = this.#notBefore - Date.now();
        if (wait > 0) this.#schedule(this.#generation, wait);
        else this.#poll();
      }
    }

    async #fetchUsage(generation) {
      let key;
      try {
        key = this.#provider ? await this.#provider() : this.#key;
      } catch (error) {
        if (generation === this.#generation) this.#failed(generation, null, `the key could not be obtained: ${error?.message ?? error}`);
        return;
      }
      if (generation !== this.#generation) return;
      if (!key) {
        // A provider with no key yet (say, before sign-in): ask it again next time.
        this.#usage = null;
        this.#show("no-key", "No API key set.");
        this.#schedule(generation, this.interval * 1000);
        return;
      }
      const controller = new AbortController();
      this.#controller = controller;
      const timeout = setTimeout(() => controller.abort(new Error("no answer in time")), FETCH_TIMEOUT);
      try {
        const response = await fetch(this.endpoint, {
          headers: { "x-api-key": String(key) },
          cache: "no-store",
          credentials: "omit",
          signal: controller.signal,
        });
        if (generation !== this.#generation) return;
        if (response.status === 401) {
          // A usage token from the provider that expired between polls is not a refused key:
          // the provider is asked again at the next poll (after the usual backoff).
          const code = this.#provider ? (await response.json().catch(() => null))?.code : null;
          if (generation !== this.#generation) return;
          if (code === "usage_token_expired") {
            this.#failed(generation, 401, "the usage token expired");
            return;
          }
          this.#refusedKey();
          return;
        }
        if (!response.ok) {
          const retryAfter = Number(response.headers.get("retry-after"));
          this.#failed(generation, response.status, `HTTP ${response.status}`, retryAfter);
          return;
        }
        const usage = await response.json();
        if (generation !== this.#generation) return;
        if (!usage || typeof usage.used !== "number" || typeof usage.limit !== "number") {
          this.#failed(generation, response.status, "an unexpected answer");
          return;
        }
        this.#succeeded(generation, usage);
      } catch (error) {
        if (generation !== this.#generation) return;
        this.#failed(generation, null, error?.message || String(error));
      } finally {
        clearTimeout(timeout);
        if (this.#controller === controller) this.#controller = null;
      }
    }

    #succeeded(generation, usage) {
      this.#failures = 0;
      this.#notBefore = 0;
      this.#usage = usage;
      this.#fetchedAt = Date.now();
      this.#render();
      this.#show("ok", usage.suspended ? "This API key's tenant is suspended: its calls are refused." : "");
      this.#emit("tollgate-usage-update", structuredClone(usage));
      this.#schedule(generation, this.interval * 1000);
    }

    #refusedKey() {
      this.#usage = null;
      this.#refused = true;
      const message = "This API key is not valid.";
      this.#show("unauthorized", message);
      this.#emit("tollgate-usage-error", { status: 401, state: "unauthorized", message, retryIn: null });
    }

    // Exponential backoff with jitter: after n failures in a row, between half and all of
    // min(cap, base·2ⁿ), never sooner than the server's Retry-After (when readable).
    #failed(generation, status, reason, retryAfter = 0) {
      this.#failures += 1;
      const base = (this.interval || DEFAULT_INTERVAL) * 1000;
      const cap = Math.max(MAX_BACKOFF * 1000, base);
      const ceiling = Math.min(cap, base * 2 ** this.#failures);
      let delay = ceiling / 2 + (Math.random() * ceiling) / 2;
      if (retryAfter > 0) delay = Math.min(cap, Math.max(delay, retryAfter * 1000));
      this.#notBefore = Date.now() + delay;
      let state;
      let message;
      if (this.#usage) {
        state = "stale";
        const when = new Date(this.#fetchedAt).toLocaleTimeString();
        message = `Usage could not be refreshed (${reason}); showing figures from ${when}.`;
      } else {
        state = "error";
        message = `Usage could not be loaded (${reason}).`;
      }
      this.#show(state, message);
      this.#emit("tollgate-usage-error", { status, state, message, retryIn: Math.round(delay / 1000) });
      this.#schedule(generation, delay);
    }

    #emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
    }

    #build() {
      const f = this.#fields;
      const field = (name, tag, attributes = {}, ...children) => {
        f[name] = h(tag, { "data-field": name, ...attributes }, ...children);
        return f[name];
      };
      const stat = (label, name) => h("div", {}, h("dt", {}, label), field(name, "dd", {}, "–"));
      f.tooltip = h("div", { class: "tooltip", part: "tooltip", "aria-hidden": "true", hidden: "" });
      f.plot = field("chart", "div", { class: "plot", part: "plot", role: "group" });
      f.plot.addEventListener("keydown", (event) => this.#onKey(event));
      f.plot.addEventListener("focusin", (event) => this.#activate(this.#bars.findIndex((b) => b.el === event.target)));
      f.plot.addEventListener("focusout", () => queueMicrotask(() => this.#activate(this.#focused())));
      f.plot.addEventListener("pointerover", (event) => {
        this.#hovered = this.#bars.findIndex((b) => b.el.contains(event.target));
        this.#activate(this.#hovered);
      });
      f.plot.addEventListener("pointerleave", () => {
        this.#hovered = -1;
        this.#activate(this.#focused());
      });
      f.meter = field("meter", "div", {
        class: "meter", part: "meter", role: "meter", "aria-label": "Requests used in the window", "aria-valuemin": "0",
      }, field("bar", "div", { part: "meter-fill" }));
      return h("section", { class: "panel", part: "panel", "aria-labelledby": "title" },
        h("header", { part: "header" },
          h("h2", { id: "title", part: "title" }, "API usage"),
          field("tier", "span", { class: "tier", part: "tier" })),
        h("div", { class: "figures" },
          h("p", { class: "headline" },
            field("used", "span", { class: "big", part: "used" }, "–"), " / ",
            field("limit", "span", {}, "–"), " ", field("window", "span")),
          f.meter,
          h("dl", { part: "stats" },
            stat("Remaining", "remaining"), stat("Resets in", "reset"),
            stat("Denied", "denied"), stat("This month", "month")),
          h("figure", { class: "chart", part: "chart", "aria-labelledby": "chart-title" },
            h("div", { class: "chart-head" },
              h("span", { id: "chart-title" }, "Requests per minute, last hour"),
              h("span", { class: "legend", part: "legend" },
                h("span", { class: "key-admitted" }, "admitted"), h("span", { class: "key-denied" }, "denied"),
                field("peak", "span", { class: "peak", part: "peak" }))),
            h("div", { class: "plot-area" }, f.plot, f.tooltip),
            field("axis", "div", { class: "axis", part: "axis", "aria-hidden": "true" }),
            h("span", { id: "chart-help", class: "sr-only" }, "Use the arrow keys to read each minute."))),
        field("message", "div", { class: "message", part: "message", role: "status" }));
    }

    #show(state, message) {
      this.dataset.state = state;
      const f = this.#fields;
      f.message.textContent = message;
      if (this.#usage) return;
      for (const name of ["used", "limit", "remaining", "reset", "denied", "month"]) f[name].textContent = "–";
      f.tier.textContent = "";
      f.window.textContent = "";
      f.peak.textContent = "";
      f.bar.style.width = "0%";
      f.meter.removeAttribute("aria-valuenow");
      f.meter.removeAttribute("aria-valuemax");
      f.meter.removeAttribute("aria-valuetext");
      f.meter.removeAttribute("data-level");
      this.#renderChart([]);
    }

    #render() {
      const u = this.#usage;
      const f = this.#fields;
      f.tier.textContent = u.tier ?? "";
      f.used.textContent = number(u.used);
      f.limit.textContent = number(u.limit);
      f.window.textContent = u.window_seconds ? per(u.window_seconds) : "";
      f.remaining.textContent = number(u.remaining);
      f.denied.textContent = number(u.denied);
      f.month.textContent = number(u.month_to_date);
      const share = u.limit > 0 ? Math.min(100, (100 * u.used) / u.limit) : 0;
      f.bar.style.width = `${share}%`;
      f.meter.setAttribute("aria-valuemax", String(Math.max(0, u.limit)));
      f.meter.setAttribute("aria-valuenow", String(Math.min(u.used, Math.max(0, u.limit))));
      f.meter.setAttribute("aria-valuetext", `${number(u.used)} of ${number(u.limit)} requests used`);
      f.meter.dataset.level = u.remaining === 0 ? "full" : share >= 80 ? "near" : "ok";
      this.#renderCountdown();
      this.#renderChart(Array.isArray(u.history) ? u.history : []);
    }

    #renderCountdown() {
      if (!this.#usage) return;
      const elapsed = Math.floor((Date.now() - this.#fetchedAt) / 1000);
      const left = Math.max(0, (this.#usage.reset_seconds ?? 0) - elapsed);
      this.#fields.reset.textContent = this.#usage.used === 0 ? "–" : duration(left);
    }

    #renderChart(history) {
      const f = this.#fields;
      this.#history = history;
      if (this.#bars.length !== history.length) {
        const keep = this.#focused() >= 0;
        this.#bars = history.map(() => {
          const admitted = h("span", { class: "admitted", part: "admitted" });
          const denied = h("span", { class: "denied", part: "denied" });
          const el = h("div", { class: "minute", part: "bar", role: "img", tabindex: "-1" }, admitted, denied);
          return { el, admitted, denied };
        });
        f.plot.replaceChildren(...this.#bars.map((b) => b.el));
        // One tab stop for the whole chart (the latest minute); arrows move between minutes.
        this.#bars.at(-1)?.el.setAttribute("tabindex", "0");
        if (keep) this.#bars.at(-1)?.el.focus();
      }
      const peak = Math.max(1, ...history.map((m) => (m.admitted ?? 0) + (m.denied ?? 0)));
      let admittedTotal = 0;
      let deniedTotal = 0;
      history.forEach((minute, i) => {
        const bar = this.#bars[i];
        const admitted = minute.admitted ?? 0;
        const denied = minute.denied ?? 0;
        admittedTotal += admitted;
        deniedTotal += denied;
        bar.admitted.style.height = `${(100 * admitted) / peak}%`;
        bar.denied.style.height = `${(100 * denied) / peak}%`;
        bar.el.setAttribute("aria-label", this.#describe(minute));
      });
      f.peak.textContent = history.length ? `peak ${number(peak)}/min` : "";
      f.plot.setAttribute("aria-label", history.length
        ? `Requests per minute, last ${history.length} minutes: ${number(admittedTotal)} admitted, ${number(deniedTotal)} denied`
        : "Requests per minute: no figures");
      f.plot.setAttribute("aria-describedby", "chart-help");
      // Time axis: a tick at each quarter hour.
      const ticks = [];
      history.forEach((minute, i) => {
        if (minute.start % 900 !== 0) return;
        const position = (100 * i) / history.length;
        const edge = i < 4 ? " start" : i > history.length - 5 ? " end" : "";
        const tick = h("span", { class: `tick${edge}`, part: "tick" }, clock.format(new Date(minute.start * 1000)));
        tick.style.left = `${position}%`;
        ticks.push(tick);
      });
      f.axis.replaceChildren(...ticks);
      if (this.#active >= history.length) this.#active = -1;
      this.#activate(this.#active);
    }

    #describe(minute) {
      return `${clock.format(new Date(minute.start * 1000))}: ${number(minute.admitted ?? 0)} admitted, ${number(minute.denied ?? 0)} denied`;
    }

    #focused() {
      const current = this.shadowRoot.activeElement;
      return this.#bars.findIndex((b) => b.el === current);
    }

    // Shows the tooltip of bar `index` (hovered or focused), or hides it (-1).
    #activate(index) {
      const f = this.#fields;
      if (this.#hovered >= 0 && index < 0) index = this.#hovered;
      this.#bars.forEach((b, i) => b.el.classList.toggle("active", i === index));
      this.#active = index;
      const minute = this.#history[index];
      if (!minute) {
        f.tooltip.hidden = true;
        return;
      }
      f.tooltip.textContent = this.#describe(minute);
      f.tooltip.hidden = false;
      const plot = f.plot.getBoundingClientRect();
      const bar = this.#bars[index].el.getBoundingClientRect();
      const width = f.tooltip.offsetWidth;
      const center = bar.left - plot.left + bar.width / 2;
      f.tooltip.style.left = `${Math.max(0, Math.min(plot.width - width, center - width / 2))}px`;
    }

    #onKey(event) {
      const current = this.#focused();
      if (current < 0) return;
      const last = this.#bars.length - 1;
      const target = { ArrowLeft: current - 1, ArrowRight: current + 1, Home: 0, End: last,
        PageUp: current - 10, PageDown: current + 10 }[event.key];
      if (target === undefined) return;
      event.preventDefault();
      const next = Math.max(0, Math.min(last, target));
      this.#bars.forEach((b, i) => b.el.setAttribute("tabindex", i === next ? "0" : "-1"));
      this.#bars[next].el.focus();
    }
  }

  if (!customElements.get(TAG)) customElements.define(TAG, TollgateUsageElement);
}
