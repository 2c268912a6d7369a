// What the embedding tests share: reading the <tollgate-usage> panel (its shadow DOM), counting
// its polls, proving the key is nowhere in the page, and calling the API through Envoy.
import { check } from "./chromium.mjs";

// Keeps what went wrong in the page: uncaught errors (which fail the test) and, to explain a
// failure, console errors and failed requests (printed as they happen).
export function watch(page, errors) {
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => message.type() === "error" && console.log(`console: ${message.text()}`));
  page.on("requestfailed", (request) => console.log(`request failed: ${request.url()} ${request.failure()?.errorText}`));
}

// Reads a [data-field] of the first panel of the page.
export function field(page, name) {
  return page.evaluate(
    (name) => document.querySelector("tollgate-usage").shadowRoot.querySelector(`[data-field="${name}"]`).textContent,
    name,
  );
}

// Waits until a [data-field] of the panel reads `value`.
export async function waitForField(page, name, value, timeout = 10_000) {
  try {
    await page.waitForFunction(
      ([name, value]) =>
        document.querySelector("tollgate-usage")?.shadowRoot?.querySelector(`[data-field="${name}"]`)?.textContent === value,
      [name, value],
      { timeout },
    );
  } catch {
    throw new Error(`the panel's ${name} did not read ${value} within ${timeout} ms (it reads ${await field(page, name).catch(() => "nothing")})`);
  }
}

export async function waitForState(page, state, timeout = 10_000) {
  try {
    await page.waitForSelector(`tollgate-usage[data-state="${state}"]`, { timeout });
  } catch {
    const now = await page.evaluate(() => document.querySelector("tollgate-usage")?.dataset.state);
    throw new Error(`the panel did not reach ${state} within ${timeout} ms (state: ${now})`);
  }
}

// Counts the panel's polls (GET of the usage endpoint) made by this page.
export function countPolls(page) {
  const counter = { count: 0 };
  page.on("request", (request) => {
    if (request.method() === "GET" && new URL(request.url()).pathname === "/api/v1/usage") counter.count += 1;
  });
  return counter;
}

// The key must not be in the page's markup (shadow roots included), any attribute, the URL or
// the element's own properties.
export async function checkKeyIsNowhere(page, key) {
  const found = await page.evaluate((key) => {
    const places = [];
    const visit = (root, where) => {
      for (const element of root.querySelectorAll("*")) {
        for (const attribute of element.attributes) {
          if (attribute.value.includes(key)) places.push(`${where} <${element.localName} ${attribute.name}>`);
        }
        if (element.shadowRoot) visit(element.shadowRoot, `${where} shadow of <${element.localName}>`);
      }
      if (root.innerHTML?.includes(key) || root.documentElement?.outerHTML.includes(key)) places.push(`${where} markup`);
    };
    visit(document, "document");
    const panel = document.querySelector("tollgate-usage");
    if (panel.apiKey !== "(set)") places.push(`element.apiKey reads ${JSON.stringify(panel.apiKey)}`);
    if (Object.hasOwn(panel, "apiKey")) places.push("an own apiKey property hides the setter");
    if (location.href.includes(key)) places.push("the URL");
    return places;
  }, key);
  check(found.length === 0, `the key was found in: ${found.join(", ")}`);
}

// Calls the API through Envoy `count` times; returns the statuses.
export async function callApi(envoyUrl, key, count) {
  const statuses = [];
  for (let i = 0; i < count; i++) {
    const response = await fetch(`${envoyUrl}/api/v1/ingest`, { headers: { "x-api-key": key } });
    await response.arrayBuffer();
    statuses.push(response.status);
  }
  return statuses;
}

// The chart: how many bars, and the admitted/denied totals their accessible labels give.
export function chart(page) {
  return page.evaluate(() => {
    const bars = [...document.querySelector("tollgate-usage").shadowRoot.querySelectorAll('[part~="bar"]')];
    let admitted = 0;
    let denied = 0;
    for (const bar of bars) {
      const match = /: ([\d,]+) admitted, ([\d,]+) denied$/.exec(bar.getAttribute("aria-label"));
      if (!match) return { bars: bars.length, bad: bar.getAttribute("aria-label") };
      admitted += Number(match[1].replace(/,/g, ""));
      denied += Number(match[2].replace(/,/g, ""));
    }
    const ticks = document.querySelector("tollgate-usage").shadowRoot.querySelectorAll('[part~="tick"]').length;
    return { bars: bars.length, admitted, denied, ticks };
  });
}

// Keyboard: the latest minute is the chart's one tab stop; the arrow keys move between minutes
// and the tooltip follows the focus. Returns the tooltip's text.
export async function readChartByKeyboard(page) {
  const panel = page.locator("tollgate-usage");
  await panel.locator('[part~="bar"][tabindex="0"]').focus();
  await page.keyboard.press("ArrowLeft");
  const state = await page.evaluate(() => {
    const root = document.querySelector("tollgate-usage").shadowRoot;
    const bars = [...root.querySelectorAll('[part~="bar"]')];
    const focused = bars.indexOf(root.activeElement);
    const tooltip = root.querySelector('[part="tooltip"]');
    return { focused, count: bars.length, tooltip: tooltip.hidden ? null : tooltip.textContent, label: root.activeElement?.getAttribute("aria-label") };
  });
  check(state.focused === state.count - 2, `ArrowLeft moved the focus to bar ${state.focused} of ${state.count}`);
  check(state.tooltip !== null && state.tooltip === state.label, `the focused minute's tooltip reads ${state.tooltip}, its label ${state.label}`);
  return state.tooltip;
}
