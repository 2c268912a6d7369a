// The page's own script: hands the key to the panel as a property (never an attribute or a
// URL) and reacts to the panel's events.
const panel = document.querySelector("tollgate-usage");
const status = document.getElementById("status");
const nearLimit = document.getElementById("near-limit");

panel.addEventListener("tollgate-usage-update", ({ detail }) => {
  status.textContent = `${detail.used} of ${detail.limit} used, ${detail.remaining} left (${detail.tier}).`;
  nearLimit.hidden = detail.used < 0.8 * detail.limit;
});
panel.addEventListener("tollgate-usage-error", ({ detail }) => {
  status.textContent = detail.message;
});

// The signed-in user's key comes from your backend; session.json stands in for it here.
const session = await fetch("session.json", { cache: "no-store" }).then((response) => response.json());
panel.apiKey = session.tollgateKey;
