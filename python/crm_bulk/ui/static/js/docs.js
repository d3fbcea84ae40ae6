// Starts the vendored Swagger UI on the API's OpenAPI document (no inline script: the page's CSP forbids it).
"use strict";
(function startDocs() {
  const root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    // Deep links would put a link inside each operation's toggle button (a control nested in a control).
    deepLinking: false,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
  // Swagger UI leaves its server picker unlabelled; name it once it is drawn.
  new MutationObserver(() => {
    const servers = document.getElementById("servers");
    if (servers && !servers.hasAttribute("aria-label")) servers.setAttribute("aria-label", "Server");
  }).observe(root, { childList: true, subtree: true });
})();
