// The demo dashboard's script, served as a file so the page's Content-Security-Policy can
// forbid inline scripts.
// The key lives in this tab's sessionStorage only: never in the URL, a cookie or the DOM.
const panel = document.getElementById("usage");
const input = document.getElementById("api-key");
await customElements.whenDefined("tollgate-usage");
const saved = sessionStorage.getItem("tollgate-api-key");
if (saved) panel.apiKey = saved;
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("tollgate-api-key", input.value.trim());
  panel.apiKey = input.value.trim();
  input.value = "";
});
document.getElementById("forget").addEventListener("click", () => {
  sessionStorage.removeItem("tollgate-api-key");
  panel.apiKey = null;
});

// Billing: a button per paid tier (Stripe Checkout) and one for Stripe's Billing Portal.
// Both pages are hosted by Stripe; the tier itself changes when Stripe confirms payment.
const billing = document.getElementById("billing");
const billingMessage = document.getElementById("billing-message");
const returned = new URLSearchParams(location.search).get("checkout");
if (returned === "success") {
  billingMessage.textContent = "Payment received: the new tier applies as soon as Stripe confirms it.";
} else if (returned === "canceled") {
  billingMessage.textContent = "Checkout canceled: nothing changed.";
}
async function goToStripe(path, body) {
  billingMessage.textContent = "Contacting Stripe…";
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "x-api-key": sessionStorage.getItem("tollgate-api-key") ?? "", "content-type": "application/json" },
      body: JSON.stringify(body ?? {}),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok && answer.url) {
      location.assign(answer.url);
    } else {
      billingMessage.textContent = answer.detail ?? `Billing answered ${response.status}.`;
    }
  } catch {
    billingMessage.textContent = "Billing could not be reached; try again shortly.";
  }
}
// Without the tier list (an older control-plane, a network error) nothing is offered.
const tiers = await fetch("/api/v1/tiers").then((r) => (r.ok ? r.json() : [])).catch(() => []);
const forSale = tiers.filter((tier) => tier.for_sale);
const plans = document.getElementById("plans");
for (const tier of forSale) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.tier = tier.name;
  button.textContent = `Upgrade to ${tier.name}` + (tier.display_price ? ` (${tier.display_price})` : "");
  button.addEventListener("click", () => goToStripe("/api/v1/billing/checkout", { tier: tier.name }));
  plans.append(button);
}
document.getElementById("manage-billing").addEventListener("click", () => goToStripe("/api/v1/billing/portal"));
// Shown only where something is for sale, to a visitor who gave a key.
const showBilling = () => {
  billing.hidden = forSale.length === 0 || !sessionStorage.getItem("tollgate-api-key");
};
document.getElementById("key-form").addEventListener("submit", showBilling);
document.getElementById("forget").addEventListener("click", showBilling);
showBilling();
