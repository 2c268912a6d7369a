// <tollgate-usage>: the API USAGE panel. A framework-free custom element: include this file
// and use the tag in any page, Angular (add CUSTOM_ELEMENTS_SCHEMA) or React.
//
//   <tollgate-usage endpoint="https://api.example.com/api/v1/usage" interval="5"></tollgate-usage>
//   panel.apiKey = key;                      // or: panel.tokenProvider = async () => key;
//
// The key is sent only in the x-api-key header, never in a URL, and kept out of the DOM: set
// it as a property; an `api-key` attribute is read once and removed at once.
//
// The host element's `data-state` says what the panel shows: no-key, loading, ok,
// unauthorized (the key was refused), stale (the last poll failed; older figures shown),
// error (no figures yet and the poll failed).

const STYLE = `
  :host { display: block; font: 14px/1.4 system-ui, sans-serif; color: #1f2933; }
  .panel { border: 1px solid #d9e2ec; border-radius: 8px; padding: 16px; background: #fff; max-width: 560px; }
  header { display: flex; justify-content: space-between; align-items: baseline; margin-bottom: 8px; }
  h2 { font-size: 13px; letter-spacing: .08em; margin: 0; color: #52606d; }
  .tier { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #e0e8f9; color: #2d3a8c; }
  .big { font-size: 28px; font-weight: 600; }
  .bar { height: 10px; background: #e4e7eb; border-radius: 5px; overflow: hidden; margin: 8px 0 12px; }
  .bar > div { height: 100%; background: #3e7bfa; transition: width .3s; }
  .bar.full > div { background: #e12d39; }
  dl { display: grid; grid-template-columns: repeat(4, 1fr); gap: 4px 12px; margin: 0 0 12px; }
  dt { font-size: 11px; color: #7b8794; text-transform: uppercase; }
  dd { margin: 0; font-weight: 600; }
  svg { width: 100%; height: 60px; display: block; }
  .admitted { fill: #3e7bfa; } .denied { fill: #e12d39; }
  .message { padding: 8px; border-radius: 6px; background: #fffbea; color: #8d2b0b; margin-top: 8px; }
  .message:empty { display: none; }
`;

class TollgateUsage extends HTMLElement {
  static observedAttributes = ["endpoint", "interval", "api-key"];

  #key = null;
  #tokenProvider = null;
  #timer = null;
  #ticker = null;
  #usage = null;
  #fetchedAt = 0;
  #generation = 0;

  constructor() {
    super();
    this.attachShadow({ mode: "open" }).innerHTML = `
      <style>${STYLE}</style>
      <section class="panel" part="panel">
        <header><h2>API USAGE</h2><span class="tier" data-field="tier"></span></header>
        <div><span class="big" data-field="used">–</span> / <span data-field="limit">–</span>
          <span data-field="window"></span></div>
        <div class="bar" part="bar"><div data-field="bar" style="width:0%"></div></div>
        <dl>
          <div><dt>Remaining</dt><dd data-field="remaining">–</dd></div>
          <div><dt>Resets in</dt><dd data-field="reset">–</dd></div>
          <div><dt>Denied</dt><dd data-field="denied">–</dd></div>
          <div><dt>This month</dt><dd data-field="month">–</dd></div>
        </dl>
        <svg data-field="chart" viewBox="0 0 600 60" preserveAspectRatio="none" aria-label="Requests per minute, last hour"></svg>
        <div class="message" data-field="message" role="status"></div>
      </section>`;
  }

  /** The tenant's API key. Not reflected to an attribute. */
  set apiKey(key) {
    this.#key = key || null;
    this.#restart();
  }
  get apiKey() {
    return this.#key ? "(set)" : null;
  }

  /** A function returning the key (or a promise of it), called before every poll. */
  set tokenProvider(provider) {
    this.#tokenProvider = typeof provider === "function" ? provider : null;
    this.#restart();
  }

  get endpoint() {
    return this.getAttribute("endpoint") || "/api/v1/usage";
  }

  get interval() {
    const seconds = Number(this.getAttribute("interval"));
    return Number.isFinite(seconds) && seconds >= 1 ? seconds : 5;
  }

  connectedCallback() {
    this.#restart();
    this.#ticker = setInterval(() => this.#renderCountdown(), 1000);
  }

  disconnectedCallback() {
    clearTimeout(this.#timer);
    clearInterval(this.#ticker);
    this.#timer = this.#ticker = null;
  }

  attributeChangedCallback(name, _old, value) {
    if (name === "api-key" && value !== null) {
      this.#key = value;
      this.removeAttribute("api-key");
    }
    if (this.isConnected) this.#restart();
  }

  #restart() {
    clearTimeout(this.#timer);
    this.#generation += 1;
    if (!this.isConnected) return;
    if (!this.#key && !this.#tokenProvider) {
      this.#usage = null;
      this.#show("no-key", "Enter an API key to see its usage.");
      return;
    }
    if (!this.#usage) this.#show("loading", "");
    this.#poll(this.#generation);
  }

  async #poll(generation) {
    try {
      const key = this.#tokenProvider ? await this.#tokenProvider() : this.#key;
      const response = await fetch(this.endpoint, {
        headers: { "x-api-key": key || "" },
        cache: "no-store",
        credentials: "omit",
      });
      if (generation !== this.#generation) return;
      if (response.status === 401) {
        this.#usage = null;
        this.#show("unauthorized", "This API key is not valid.");
      } else if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      } else {
        this.#usage = await response.json();
        this.#fetchedAt = Date.now();
        this.#render();
        this.#show("ok", "");
      }
    } catch (error) {
      if (generation !== this.#generation) return;
      if (this.#usage) {
        const when = new Date(this.#fetchedAt).toLocaleTimeString();
        this.#show("stale", `Usage could not be refreshed (${error.message}); showing figures from ${when}.`);
      } else {
        this.#show("error", `Usage could not be loaded (${error.message}).`);
      }
    }
    if (generation === this.#generation && this.isConnected) {
      this.#timer = setTimeout(() => this.#poll(generation), this.interval * 1000);
    }
  }

  #field(name) {
    return this.shadowRoot.querySelector(`[data-field="${name}"]`);
  }

  #show(state, message) {
    this.dataset.state = state;
    this.#field("message").textContent = message;
    if (!this.#usage) {
      for (const name of ["used", "limit", "remaining", "reset", "denied", "month"]) this.#field(name).textContent = "–";
      this.#field("tier").textContent = "";
      this.#field("window").textContent = "";
      this.#field("bar").style.width = "0%";
      this.#field("chart").replaceChildren();
    }
  }

  #render() {
    const u = this.#usage;
    this.#field("tier").textContent = u.tier;
    this.#field("used").textContent = u.used.toLocaleString();
    this.#field("limit").textContent = u.limit.toLocaleString();
    this.#field("window").textContent = `per ${u.window_seconds} s`;
    this.#field("remaining").textContent = u.remaining.toLocaleString();
    this.#field("denied").textContent = u.denied.toLocaleString();
    this.#field("month").textContent = u.month_to_date.toLocaleString();
    const share = u.limit > 0 ? Math.min(100, (100 * u.used) / u.limit) : 0;
    this.#field("bar").style.width = `${share}%`;
    this.#field("bar").parentElement.classList.toggle("full", u.remaining === 0);
    this.#renderCountdown();
    this.#renderChart(u.history || []);
  }

  #renderCountdown() {
    if (!this.#usage) return;
    const elapsed = Math.floor((Date.now() - this.#fetchedAt) / 1000);
    const left = Math.max(0, this.#usage.reset_seconds - elapsed);
    this.#field("reset").textContent = this.#usage.used === 0 ? "–" : `${left} s`;
  }

  #renderChart(history) {
    const svg = this.#field("chart");
    const peak = Math.max(1, ...history.map((m) => m.admitted + m.denied));
    const width = 600 / Math.max(1, history.length);
    const bars = [];
    history.forEach((minute, i) => {
      const admitted = (60 * minute.admitted) / peak;
      const denied = (60 * minute.denied) / peak;
      const title = `${new Date(minute.start * 1000).toLocaleTimeString()}: ${minute.admitted} admitted, ${minute.denied} denied`;
      bars.push(
        `<g><title>${title}</title>` +
          `<rect class="admitted" x="${i * width}" y="${60 - admitted}" width="${width - 1}" height="${admitted}"></rect>` +
          `<rect class="denied" x="${i * width}" y="${60 - admitted - denied}" width="${width - 1}" height="${denied}"></rect></g>`,
      );
    });
    svg.innerHTML = bars.join("");
  }
}

if (!customElements.get("tollgate-usage")) customElements.define("tollgate-usage", TollgateUsage);
