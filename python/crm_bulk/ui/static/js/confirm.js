// A confirmation as a modal <dialog>: focus moves into it, Escape cancels, and focus returns afterwards.
import { h } from "./dom.js";

export function confirmAction(question, confirmLabel) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const yes = h("button", { type: "button", value: "yes" }, confirmLabel);
    const no = h("button", { type: "button", class: "secondary", value: "no" }, "Keep it");
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-question" },
      h("p", { id: "confirm-question" }, question),
      h("div", { class: "toolbar" }, yes, no),
    );
    const finish = (answer) => {
      dialog.close();
      dialog.remove();
      if (opener instanceof HTMLElement) opener.focus();
      resolve(answer);
    };
    yes.addEventListener("click", () => finish(true));
    no.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}
