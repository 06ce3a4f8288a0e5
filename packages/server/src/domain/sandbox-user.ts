/**
 * The unprivileged user every Shoal image has (the system template's, a Debian release's): what
 * `user: "user"` runs as, and who owns `/workspace`.
 *
 * @example
 *   const ids = { uid: SANDBOX_USER.uid, gid: SANDBOX_USER.gid };
 */
export const SANDBOX_USER = { name: "user", uid: 1000, gid: 1000, home: "/home/user" } as const;
