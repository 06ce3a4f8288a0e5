/**
 * The credential of an `Authorization: Bearer <credential>` header; undefined when the header
 * has another form. Each caller says in its own words what it expected there.
 */
export function bearerCredential(authorization: string): string | undefined {
  return /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization)?.[1];
}
