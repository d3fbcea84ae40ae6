// The sign-in form: POST /auth/login; the token goes to the API client's memory, nowhere else.
import { api } from "../api.js";
import { h, replace } from "../dom.js";

export function showLogin(main, signIn) {
  const error = h("p", { class: "error", role: "alert", id: "login-error" });
  const email = h("input", { id: "login-email", type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", {
    id: "login-password", type: "password", name: "password", autocomplete: "current-password", required: true,
  });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "card narrow", "aria-describedby": "login-error" },
    h("div", { class: "field" }, h("label", { for: "login-email" }, "Email"), email),
    h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), password),
    submit,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      const answer = await api("/auth/login", { method: "POST", body: { email: email.value, password: password.value } });
      await signIn(answer.access_token);
    } catch (failure) {
      error.textContent = `Could not sign in: ${failure.message}`;
      submit.disabled = false;
      password.focus();
    }
  });
  replace(main, h("h1", { tabindex: "-1" }, "Sign in"), form);
  document.title = "Sign in · crm-bulk";
  email.focus();
}
