// Drives /dashboard in headless Chromium (Debian's, no browser download): enter a key, see
// used/limit, watch the panel update by itself while requests flow through Envoy, then see
// the invalid-key state. Started by the end-to-end test `the_dashboard_shows_usage_and_keeps_up_in_a_real_browser`, which
// passes the stack's URLs and a tenant's key in the environment and checks the exit status.
import { check, inChromium } from "./chromium.mjs";

const { DASHBOARD_URL, ENVOY_URL, API_KEY, SCREENSHOT } = process.env;

async function callApi(count) {
  for (let i = 0; i < count; i++) {
    const response = await fetch(`${ENVOY_URL}/api/v1/ingest`, { headers: { "x-api-key": API_KEY } });
    check(response.status === 200, `request through Envoy answered ${response.status}`);
  }
}

await inChromium(async (page) => {
  await page.goto(DASHBOARD_URL);
  const panel = page.locator("tollgate-usage");
  await page.waitForSelector('tollgate-usage[data-state="no-key"]');

  await page.fill("#api-key", API_KEY);
  await page.click('button[type="submit"]');
  await page.waitForSelector('tollgate-usage[data-state="ok"]');
  check(await page.locator("#billing").isHidden(), "billing shows where nothing is for sale");
  const field = (name) => panel.locator(`[data-field="${name}"]`);
  check((await field("used").textContent()) === "3", `used shows ${await field("used").textContent()}, expected 3`);
  check((await field("limit").textContent()) === "60", "limit shows 60");
  check((await field("remaining").textContent()) === "57", "remaining shows 57");
  check((await field("tier").textContent()) === "standard", "tier shows standard");

  // More traffic through Envoy: the panel must catch up by polling, with no reload.
  await callApi(4);
  await page.waitForFunction(
    () => document.querySelector("tollgate-usage").shadowRoot.querySelector('[data-field="used"]').textContent === "7",
    null,
    { timeout: 15_000 },
  );
  const bars = await panel.locator('[part~="bar"]').count();
  check(bars === 60, `the chart has ${bars} minutes, expected 60`);

  // The key stays out of the DOM and the URL.
  const html = await page.content();
  check(!html.includes(API_KEY), "the key appears in the page's HTML");
  check(!page.url().includes(API_KEY), "the key appears in the URL");
  check((await panel.getAttribute("api-key")) === null, "the element carries the key as an attribute");
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // A failed poll keeps the last figures, marked stale; the next good poll clears it.
  await page.route("**/api/v1/usage", (route) => route.abort("connectionrefused"));
  await page.waitForSelector('tollgate-usage[data-state="stale"]', { timeout: 10_000 });
  check((await field("used").textContent()) === "7", "stale figures stay visible");
  check((await field("message").textContent()).includes("could not be refreshed"), "the stale state says so");
  await page.unroute("**/api/v1/usage");
  await page.waitForSelector('tollgate-usage[data-state="ok"]', { timeout: 10_000 });

  await page.fill("#api-key", "tg_not_a_valid_key");
  await page.click('button[type="submit"]');
  await page.waitForSelector('tollgate-usage[data-state="unauthorized"]');
  const message = await field("message").textContent();
  check(message.includes("not valid"), `the invalid-key message reads ${JSON.stringify(message)}`);
  check((await field("used").textContent()) === "–", "no stale figures after an invalid key");
  console.log("dashboard: ok");
});
