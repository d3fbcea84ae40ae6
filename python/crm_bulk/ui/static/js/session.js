// Who is signed in: the account and role from GET /accounts/me, read once after sign-in.

const RANK = { viewer: 0, editor: 1, admin: 2 };

export const session = { account: null };

/** Whether the signed-in member's role is at least `role` (viewer < editor < admin). */
export function allows(role) {
  const mine = session.account ? session.account.role : null;
  return mine !== null && RANK[mine] >= RANK[role];
}
