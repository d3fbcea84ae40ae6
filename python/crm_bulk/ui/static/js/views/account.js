// The account: name, role and limits for everyone; for admins, the limits form and the members.
import { api } from "../api.js";
import { confirmAction } from "../confirm.js";
import { announce, count, h, replace, table, when } from "../dom.js";
import { allows, session } from "../session.js";

export async function showAccount(main, signal) {
  const account = await api("/accounts/me", { signal });
  session.account = account;
  const message = h("p", { class: "error", role: "alert", id: "account-message" });
  const limits = account.limits;
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Account"),
    message,
    h("section", { class: "card", "aria-labelledby": "account-heading" },
      h("h2", { id: "account-heading" }, account.name),
      h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "Your role"), h("dd", { id: "my-role" }, account.role)),
        h("div", {}, h("dt", {}, "API requests per minute"), h("dd", { id: "limit-requests" }, count(limits.api_requests_per_minute))),
        h("div", {}, h("dt", {}, "Entities per second"), h("dd", { id: "limit-entities" }, count(limits.entities_per_second))))),
    allows("admin") ? limitsForm(limits, message, () => showAccount(main, signal)) : null,
    allows("admin") ? await membersSection(message, signal) : null,
  );
}

function limitsForm(limits, message, reload) {
  const requests = h("input", { type: "number", id: "requests-per-minute", min: "1", required: true, value: String(limits.api_requests_per_minute) });
  const entities = h("input", { type: "number", id: "entities-per-second", min: "1", required: true, value: String(limits.entities_per_second) });
  const form = h("form", { class: "card", "aria-labelledby": "limits-heading" },
    h("h2", { id: "limits-heading" }, "Limits"),
    h("div", { class: "field" }, h("label", { for: "requests-per-minute" }, "API requests per minute"), requests),
    h("div", { class: "field" }, h("label", { for: "entities-per-second" }, "Entities per second"), entities),
    h("button", { type: "submit" }, "Save limits"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    try {
      await api("/accounts/me/limits", { method: "PATCH", body: {
        api_requests_per_minute: Number(requests.value), entities_per_second: Number(entities.value) } });
      announce("Limits saved");
      await reload();
    } catch (failure) {
      message.textContent = `Limits not saved: ${failure.message}`;
    }
  });
  return form;
}

async function membersSection(message, signal) {
  const body = h("div");
  const section = h("section", { "aria-labelledby": "members-heading" }, h("h2", { id: "members-heading" }, "Members"), body);
  const load = async () => {
    const members = await api("/accounts/me/members", { signal });
    replace(body, table("Members of the account", ["Email", "Role", "Since", ""], members.map((member) => h("tr", {},
      h("td", {}, member.email), h("td", {}, member.role), h("td", {}, when(member.created_at)),
      h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `Remove ${member.email}`, onclick: async () => {
        if (!(await confirmAction(`Remove ${member.email} from the account?`, "Remove"))) return;
        try {
          await api(`/accounts/me/members/${member.user_id}`, { method: "DELETE" });
          announce(`${member.email} removed`);
          await load();
        } catch (failure) {
          message.textContent = `Not removed: ${failure.message}`;
        }
      } }, "Remove"))))), addForm());
  };
  const addForm = () => {
    const email = h("input", { type: "email", id: "member-email", required: true, autocomplete: "off" });
    const password = h("input", { type: "password", id: "member-password", required: true, minlength: "8", autocomplete: "new-password" });
    const role = h("select", { id: "member-role" }, ["viewer", "editor", "admin"].map((r) => h("option", { value: r }, r)));
    const form = h("form", { class: "card", "aria-labelledby": "add-member-heading" },
      h("h3", { id: "add-member-heading" }, "Add a member"),
      h("div", { class: "field" }, h("label", { for: "member-email" }, "Email"), email),
      h("div", { class: "field" }, h("label", { for: "member-password" }, "Password"), password),
      h("div", { class: "field" }, h("label", { for: "member-role" }, "Role"), role),
      h("button", { type: "submit" }, "Add member"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "";
      try {
        await api("/accounts/me/members", { method: "POST", body: { email: email.value, password: password.value, role: role.value } });
        announce(`${email.value} added`);
        await load();
      } catch (failure) {
        message.textContent = `Not added: ${failure.message}`;
      }
    });
    return form;
  };
  await load();
  return section;
}
