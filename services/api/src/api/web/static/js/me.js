// The signed-in key (GET /v1/me) and what it may do.
let current = null;
export const me = () => current;
export const setMe = (who) => { current = who; };
export const can = (scope) => !!current && current.effective_scopes.includes(scope);
// A disabled control says why: screen readers read the title and the visible hint.
export function guard(button, scope) {
  if (can(scope)) return button;
  button.disabled = true;
  button.title = `Needs the \`${scope}\` scope; this key has ${current ? current.scopes.join(", ") : "none"}`;
  button.classList.add("lacks");
  return button;
}
export const lacks = (scope) => `This key lacks the \`${scope}\` scope.`;
