// What the browser tests share: Debian's Chromium (no browser download) launched headless
// with the flags that work as root without a network, a hard deadline, and a check that
// fails the script (the end-to-end test reads the exit status and the output).
import { chromium } from "playwright-core";

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Runs `scenario(page)` in a fresh browser, closed whatever happens; exits 2 if the whole
// run takes longer than a minute.
export async function inChromium(scenario) {
  const deadline = setTimeout(() => {
    console.error("browser test timed out");
    process.exit(2);
  }, 60_000);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    await scenario(await browser.newPage());
  } finally {
    clearTimeout(deadline);
    await browser.close();
  }
}
