// Drives the dashboard's billing buttons in headless Chromium: the upgrade button creates a
// Checkout Session through Envoy and sends the browser to Stripe's page (answered here by a
// stand-in, so nothing leaves the machine); the portal button before any purchase explains
// itself; the return from Checkout is acknowledged. Started by the end-to-end test
// `the_dashboard_sends_the_tenant_to_stripe`.
import { check, inChromium } from "./chromium.mjs";

const { DASHBOARD_URL, API_KEY, SCREENSHOT } = process.env;

await inChromium(async (page) => {
  await page.goto(DASHBOARD_URL);
  // The billing script has run once the plans are in the page (hidden until a key is given).
  await page.locator('button[data-tier="pro"]').waitFor({ state: "attached" });
  check(await page.locator("#billing").isHidden(), "billing shows before a key is given");

  await page.fill("#api-key", API_KEY);
  await page.click('button[type="submit"]');
  const upgrade = page.locator('button[data-tier="pro"]');
  await upgrade.waitFor();
  const label = await upgrade.textContent();
  check(label === "Upgrade to pro ($49/month)", `the upgrade button reads ${JSON.stringify(label)}`);
  check(await page.locator('button[data-tier="standard"]').count() === 0, "a free tier is offered for sale");

  await page.click("#manage-billing");
  await page.waitForFunction(() => document.getElementById("billing-message").textContent.includes("no billing account"));
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // Stripe's hosted page, answered inside the browser.
  await page.route("https://checkout.stripe.test/**", (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: "<title>Stripe Checkout</title>" }));
  await upgrade.click();
  // The URL the control-plane got from Stripe (the stand-in), followed by the page.
  await page.waitForURL(/^https:\/\/checkout\.stripe\.test\/c\/pay\/cs_test_/);

  await page.goto(`${DASHBOARD_URL}?checkout=success&session_id=cs_test_1`);
  await page.waitForFunction(() => document.getElementById("billing-message").textContent.includes("Payment received"));
  check(!page.url().includes(API_KEY), "the key appears in the URL");
  console.log("billing: ok");
});
