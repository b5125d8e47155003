// Swagger UI for /openapi.json, from Kiln's own copy of its bundle (no CDN). A key signed in on the UI is used here too.
window.addEventListener("load", () => {
  const key = sessionStorage.getItem("kiln.apiKey");
  const ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // its default is a validator on another host
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    onComplete: () => {
      if (key) ui.preauthorizeApiKey("apiKey", key); // the OpenAPI document's bearer scheme
    },
  });
});
