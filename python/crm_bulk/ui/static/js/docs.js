// Starts the vendored Swagger UI on the API's OpenAPI document (no inline script: the page's CSP forbids it).
"use strict";
(function startDocs() {
  const root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
