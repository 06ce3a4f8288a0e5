/**
 * Which methods each registered path answers, so that an unmatched request can be told apart:
 * a known path with another method is METHOD_NOT_ALLOWED (with `Allow`), anything else is
 * ROUTE_NOT_FOUND.
 */
export class RouteIndex {
  private readonly routes: { pattern: RegExp; method: string }[] = [];

  add(method: string, url: string): void {
    const pattern = url
      .split("/")
      .map((segment) =>
        segment.startsWith(":") ? "[^/]+" : segment === "*" ? ".*" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
      )
      .join("/");
    this.routes.push({ pattern: new RegExp(`^${pattern}/?$`), method });
  }

  allowedMethods(path: string): string[] {
    const methods = new Set<string>();
    for (const route of this.routes) if (route.pattern.test(path)) methods.add(route.method);
    return [...methods].sort();
  }
}
