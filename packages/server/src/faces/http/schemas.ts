/** Schema pieces that several routes share. */
import { Type } from "typebox";

/** A time or null, as one JSON-schema type list: cheaper to serialize than a union of schemas. */
export const OptionalTime = Type.Unsafe<string | null>({ type: ["string", "null"], format: "date-time" });
