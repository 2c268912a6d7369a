// Drives the Angular example (examples/angular, a production build) in headless Chromium, on
// its own origin, with the panel's script from the control-plane through Envoy: the panel
// reaches `ok` with the figures of the requests made before, keeps up through the
// dashboard's polling loop, lets the dashboard react to its events, keeps the key out of the
// DOM; then the same app with the script loaded only after Angular has bound the key; and,
// meanwhile in another page, a refused key, which must stop the polling. Started by the
// end-to-end test `the_angular_example_embeds_the_panel_from_another_origin`
// (tests/tests/e2e/embedding.rs), which serves the app (its session.json carries API_KEY) and
// made 3 requests with the key.
import { check, inChromium } from "./chromium.mjs";
import { watch, callApi, chart, checkKeyIsNowhere, countPolls, field, readChartByKeyboard, waitForField, waitForState } from "./panel.mjs";

const { APP_URL, ENVOY_URL, API_KEY, ARTIFACTS } = process.env;
const SCRIPT = `${ENVOY_URL}/ui/tollgate-usage.js`;
const text = (page, selector) => page.locator(selector).textContent().then((t) => t.trim());

await inChromium(async (page) => {
  const browser = page.context().browser();
  const errors = [];
  // The refused key in a page of its own, while the others run (its check takes two turns of
  // the dashboard's loop).
  const refused = await browser.newPage();
  await Promise.all([documentedThenLate(page, errors), refusedKey(refused, errors)]);
  check(errors.length === 0, `errors in the page: ${errors.join("; ")}`);
  console.log("angular: ok");
});

async function documentedThenLate(page, errors) {
  const browser = page.context().browser();
  watch(page, errors);

  // 1. As documented: the script in index.html, the key bound with [apiKey].
  await page.emulateMedia({ reducedMotion: "reduce" }); // screenshots without the meter's transition
  const polls = countPolls(page);
  await page.goto(APP_URL);
  await waitForState(page, "ok", 15_000);
  check(!(await page.evaluate(() => Object.hasOwn(document.querySelector("tollgate-usage"), "apiKey"))),
    "the element was defined after the binding (expected before, in this variant)");
  check((await field(page, "used")) === "3", `used reads ${await field(page, "used")}, expected 3`);
  check((await field(page, "limit")) === "60", "limit reads 60");
  check((await field(page, "remaining")) === "57", "remaining reads 57");
  check((await field(page, "tier")) === "standard", "tier reads standard");
  // The dashboard's own cards come from the panel's tollgate-usage-update events.
  await page.waitForFunction(() => document.getElementById("month-to-date").textContent.trim() === "3");
  check((await text(page, "#tier")) === "standard", "the dashboard's plan card reads the event's tier");
  const drawn = await chart(page);
  check(drawn.bars === 60 && drawn.admitted === 3 && drawn.denied === 0 && drawn.ticks >= 3,
    `the chart shows ${JSON.stringify(drawn)}, expected 60 bars, 3 admitted, time ticks`);
  const tooltip = await readChartByKeyboard(page);
  console.log(`angular: keyboard tooltip "${tooltip}"`);

  // More traffic: the dashboard's polling loop (panel.refresh() every 2 s) catches up.
  await callApi(ENVOY_URL, API_KEY, 4);
  await waitForField(page, "used", "7");
  await page.waitForFunction(() => document.getElementById("month-to-date").textContent.trim() === "7");
  check(polls.count >= 2, `${polls.count} polls`);
  await checkKeyIsNowhere(page, API_KEY);

  // Close to the limit and over it: the meter turns, denials are stacked in the chart, and the
  // dashboard shows its upgrade banner from the event's figures.
  const statuses = await callApi(ENVOY_URL, API_KEY, 56);
  check(statuses.filter((s) => s === 429).length === 3, `statuses ${statuses.join(",")}`);
  await waitForField(page, "remaining", "0");
  await page.locator("#near-limit").waitFor();
  // Hovering a bar shows its values too: the latest minute's.
  const latest = page.locator('tollgate-usage [part~="bar"]').last();
  await latest.hover();
  const hovered = await page.locator('tollgate-usage [part="tooltip"]').textContent();
  check(hovered === (await latest.getAttribute("aria-label")) && /: \d+ admitted, \d+ denied$/.test(hovered),
    `the hovered minute's tooltip reads ${hovered}`);
  const full = await chart(page);
  check(full.admitted === 60, `the chart shows ${JSON.stringify(full)}, expected 60 admitted`);
  await page.screenshot({ path: `${ARTIFACTS}/embedding-angular.png`, fullPage: true });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: `${ARTIFACTS}/embedding-angular-dark.png`, fullPage: true });

  // 2. The script loaded after Angular has bound the key (a dynamic import after bootstrap):
  // the key set on the undefined element is taken over, and hidden again.
  const late = await browser.newPage();
  watch(late, errors);
  // The same build without the script tag in index.html (the example site serves it at /late/).
  await late.goto(`${APP_URL}late/`);
  await late.waitForFunction(
    (key) => !customElements.get("tollgate-usage") && document.querySelector("tollgate-usage")?.apiKey === key,
    API_KEY,
  );
  await late.evaluate((url) => import(url), SCRIPT);
  await waitForState(late, "ok");
  check((await field(late, "limit")) === "60", "the late panel shows the limit");
  await checkKeyIsNowhere(late, API_KEY);
  console.log("angular: script loaded after the binding: ok");
  await late.close();
}

async function refusedKey(refused, errors) {
  // 3. A refused key: `unauthorized`, one poll and no more, though the loop keeps refreshing.
  watch(refused, errors);
  const refusedPolls = countPolls(refused);
  await refused.route(`${APP_URL}session.json`, (route) =>
    route.fulfill({ contentType: "application/json", body: JSON.stringify({ tollgateKey: "tg_not_a_valid_key" }) }));
  await refused.goto(APP_URL);
  await waitForState(refused, "unauthorized");
  await refused.locator("#problem").waitFor();
  check((await text(refused, "#problem")).includes("refused"), "the dashboard says the key was refused");
  await refused.waitForTimeout(4_500); // two turns of the dashboard's loop
  check(refusedPolls.count === 1, `${refusedPolls.count} polls with a refused key, expected 1`);
  await refused.screenshot({ path: `${ARTIFACTS}/embedding-angular-unauthorized.png` });
  await refused.close();
}
