/**
 * The templates a HopX client sees, each backed by a Shoal template: HopX's `code-interpreter`
 * (python, javascript, bash) is Shoal's `system` image, which has python3, node and bash. The
 * resources of a sandbox come from its template, as on HopX, whose create request names none.
 * A template's id is its name, so `template_id` and `template_name` find the same entries.
 *
 * @example
 *   const template = hopxTemplate("code-interpreter"); // { shoalTemplate: "system", … }
 *   reply.send(templateView(template, request.id));
 */
import { ShoalError } from "../../../errors/shoal-error.ts";

export interface HopxTemplate {
  readonly name: string;
  readonly displayName: string;
  readonly description: string;
  readonly category: string;
  readonly language: string;
  readonly features: readonly string[];
  readonly tags: readonly string[];
  /** The Shoal template its sandboxes start from. */
  readonly shoalTemplate: string;
  readonly vcpu: number;
  readonly memoryMib: number;
  readonly diskMib: number;
}

export const hopxTemplates: readonly HopxTemplate[] = [
  {
    name: "code-interpreter",
    displayName: "Code Interpreter",
    description: "Python, JavaScript and Bash execution",
    category: "code-interpreter",
    language: "python",
    features: ["python", "javascript", "bash"],
    tags: ["code-execution", "multi-language"],
    shoalTemplate: "system",
    vcpu: 1,
    memoryMib: 512,
    diskMib: 1024,
  },
  {
    name: "system",
    displayName: "System",
    description: "Shoal's base image: a shell with python3 and node",
    category: "ubuntu",
    language: "bash",
    features: ["bash", "python", "javascript"],
    tags: ["base"],
    shoalTemplate: "system",
    vcpu: 1,
    memoryMib: 256,
    diskMib: 1024,
  },
];

/** HopX's built-in template named (or with the id) `nameOrId`, if there is one. */
export function findHopxTemplate(nameOrId: string): HopxTemplate | undefined {
  return hopxTemplates.find((candidate) => candidate.name === nameOrId);
}

/** The template named (or with the id) `nameOrId`; TEMPLATE_NOT_FOUND when there is none. */
export function hopxTemplate(nameOrId: string): HopxTemplate {
  const template = findHopxTemplate(nameOrId);
  if (!template) throw new ShoalError("TEMPLATE_NOT_FOUND", { details: { template: nameOrId } });
  return template;
}

/** HopX's template object (`GET /v1/templates/{name}` and each item of the list). */
export function templateView(template: HopxTemplate) {
  return {
    id: template.name,
    object: "template",
    name: template.name,
    display_name: template.displayName,
    description: template.description,
    category: template.category,
    language: template.language,
    default_resources: {
      vcpu: template.vcpu,
      memory_mb: template.memoryMib,
      disk_gb: Math.ceil(template.diskMib / 1024),
    },
    features: [...template.features],
    tags: [...template.tags],
    is_public: true,
    is_active: true,
    status: "active",
  };
}
