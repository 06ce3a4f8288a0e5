/**
 * Turns schema-validation failures into one VALIDATION_ERROR whose `details.fields` maps each
 * bad field (dotted path, `[i]` for array items) to a reason a person can act on.
 *
 * @example
 *   // POST /v1/api-keys {}  →  details.fields = { name: "is required", scopes: "is required" }
 */
import { ShoalError } from "../../errors/shoal-error.ts";

/** The part of an Ajv error object this translation reads. */
export interface ValidationIssue {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
}

export function validationError(issues: readonly ValidationIssue[], context: string | undefined): ShoalError {
  const fields: Record<string, string> = {};
  for (const issue of issues) {
    const field = fieldOf(issue, context);
    fields[field] ??= reasonOf(issue);
  }
  const message = Object.entries(fields)
    .map(([field, reason]) => `${field} ${reason}`)
    .join("; ");
  return new ShoalError("VALIDATION_ERROR", { message, details: { fields } });
}

function fieldOf(issue: ValidationIssue, context: string | undefined): string {
  const segments = issue.instancePath.split("/").slice(1).map(unescapePointer);
  const extra = issue.params.missingProperty ?? issue.params.additionalProperty;
  if (typeof extra === "string") segments.push(extra);
  let field = "";
  for (const segment of segments) {
    field += /^\d+$/.test(segment) ? `[${segment}]` : field === "" ? segment : `.${segment}`;
  }
  return field === "" ? `(${context ?? "body"})` : field;
}

function unescapePointer(segment: string): string {
  return segment.replaceAll("~1", "/").replaceAll("~0", "~");
}

function reasonOf(issue: ValidationIssue): string {
  const { params } = issue;
  switch (issue.keyword) {
    case "required":
      return "is required";
    case "additionalProperties":
      return "is not allowed";
    case "type":
      return `must be ${article(String(params.type))}`;
    case "minimum":
      return `must be at least ${params.limit}`;
    case "maximum":
      return `must be at most ${params.limit}`;
    case "minLength":
      return `must be at least ${params.limit} characters long`;
    case "maxLength":
      return `must be at most ${params.limit} characters long`;
    case "minItems":
      return `must have at least ${params.limit} items`;
    case "maxItems":
      return `must have at most ${params.limit} items`;
    case "uniqueItems":
      return "must not contain duplicates";
    case "enum":
      return `must be one of: ${(params.allowedValues as unknown[]).join(", ")}`;
    case "format":
      return `must be a valid ${params.format}`;
    case "pattern":
      return "has an invalid format";
    default:
      return issue.message ?? "is invalid";
  }
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}
