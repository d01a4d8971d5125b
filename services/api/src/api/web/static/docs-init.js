// Swagger UI for /openapi.json, fully offline: no validator badge (it calls an outside host).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  layout: "BaseLayout",
  showExtensions: true,
  // The key typed into "Authorize" lives only in this page's memory.
  persistAuthorization: false,
});
