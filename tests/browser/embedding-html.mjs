// Drives the plain HTML example (examples/html: a page and its own script file) in headless
// Chromium, on its own origin, with the panel's script from the control-plane through Envoy:
// the panel reaches `ok` with the figures of the requests made before, its events reach the
// page (and bubble to the document), it keeps up by polling on its own (interval="2"), it
// stops polling while the tab is hidden and refreshes at once when it shows again, and the
// key stays out of the DOM. Started by the end-to-end test
// `the_plain_html_example_embeds_the_panel_from_another_origin` (tests/tests/e2e/embedding.rs),
// which serves the page (session.json carries API_KEY) and made 2 requests with the key.
import { check, inChromium } from "./chromium.mjs";
import { watch, callApi, chart, checkKeyIsNowhere, countPolls, field, waitForField, waitForState } from "./panel.mjs";

const { PAGE_URL, ENVOY_URL, API_KEY, ARTIFACTS } = process.env;

// Hides or shows the tab as the browser would tell the page.
function setHidden(page, hidden) {
  return page.evaluate((hidden) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

await inChromium(async (page) => {
  const errors = [];
  watch(page, errors);
  // The events bubble out of the shadow DOM up to the document.
  await page.addInitScript(() => {
    window.heard = [];
    document.addEventListener("tollgate-usage-update", (event) => window.heard.push(event.detail));
  });
  await page.emulateMedia({ reducedMotion: "reduce" }); // screenshots without the meter's transition
  const polls = countPolls(page);
  await page.goto(PAGE_URL);
  await waitForState(page, "ok", 15_000);
  check((await field(page, "used")) === "2", `used reads ${await field(page, "used")}, expected 2`);
  check((await field(page, "remaining")) === "58", "remaining reads 58");
  const status = () => page.locator("#status").textContent();
  check((await status()) === "2 of 60 used, 58 left (standard).", `the page's status reads ${await status()}`);
  const heard = await page.evaluate(() => window.heard.at(-1));
  check(heard?.used === 2 && heard.limit === 60 && heard.history.length === 60, `the document heard ${JSON.stringify(heard)?.slice(0, 200)}`);
  const drawn = await chart(page);
  check(drawn.bars === 60 && drawn.admitted === 2, `the chart shows ${JSON.stringify(drawn)}`);

  // Polling on its own: new requests show within an interval or two.
  await callApi(ENVOY_URL, API_KEY, 3);
  await waitForField(page, "used", "5", 6_000);
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("5 of 60 used"));
  await checkKeyIsNowhere(page, API_KEY);
  await page.screenshot({ path: `${ARTIFACTS}/embedding-html.png`, fullPage: true });

  // Hidden tab: no polls at all; shown again: a poll at once, not at the next interval.
  await setHidden(page, true);
  await page.waitForTimeout(300); // a poll already in flight may still land
  const before = polls.count;
  await callApi(ENVOY_URL, API_KEY, 1);
  await page.waitForTimeout(4_500); // two intervals
  check(polls.count === before, `${polls.count - before} polls while the tab was hidden`);
  check((await field(page, "used")) === "5", "the hidden panel changed");
  // No timer is left while hidden: only the return to visible can poll, and at once.
  const shown = Date.now();
  const poll = page.waitForRequest((request) => new URL(request.url()).pathname === "/api/v1/usage", { timeout: 1_500 });
  await setHidden(page, false);
  await poll;
  console.log(`html: polled ${Date.now() - shown} ms after the tab showed again`);
  await waitForField(page, "used", "6");

  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: `${ARTIFACTS}/embedding-html-dark.png`, fullPage: true });
  check(errors.length === 0, `errors in the page: ${errors.join("; ")}`);
  console.log("html: ok");
});
