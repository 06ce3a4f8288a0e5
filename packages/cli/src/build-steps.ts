/**
 * The step options of `shoal template build` (`--run`, `--copy`, `--env`, `--workdir`, `--user`):
 * each occurrence is one step, and steps run in the order they were written on the command line,
 * whichever option they came from. Commander gathers each option apart, so each value carries its
 * place in the command line and `orderedSteps` merges them back.
 *
 * @example
 *   shoal template build app --env MODE=prod --run 'make' --copy ./src:/opt/src --run 'make install'
 */
import { InvalidArgumentError } from "commander";

/** A `--copy` before its directory is uploaded: the local directory and where it lands. */
export interface CopyFlag {
  dir: string;
  to: string;
}

export type StepFlag =
  | { run: string }
  | { copy: CopyFlag }
  | { env: Record<string, string> }
  | { workdir: string }
  | { user: string };

type Placed = { readonly place: number; readonly step: StepFlag };

let places = 0;

function placed(parse: (value: string) => StepFlag): (value: string, previous?: Placed[]) => Placed[] {
  return (value, previous = []) => [...previous, { place: places++, step: parse(value) }];
}

export const runStep = placed((value) => ({ run: value }));

/** `DIR:/dest`: the split is at the last `:/`, so a local directory's name may hold colons. */
export const copyStep = placed((value) => {
  const split = value.lastIndexOf(":/");
  if (split <= 0) throw new InvalidArgumentError(`expected LOCAL_DIR:/absolute/dest, got "${value}"`);
  return { copy: { dir: value.slice(0, split), to: value.slice(split + 1) } };
});

export const envStep = placed((value) => {
  const equals = value.indexOf("=");
  if (equals <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${value}"`);
  return { env: { [value.slice(0, equals)]: value.slice(equals + 1) } };
});

export const workdirStep = placed((value) => ({ workdir: value }));
export const userStep = placed((value) => ({ user: value }));

/** The steps of every step option, in command-line order. */
export function orderedSteps(...options: (Placed[] | undefined)[]): StepFlag[] {
  return options
    .flatMap((values) => values ?? [])
    .sort((a, b) => a.place - b.place)
    .map((value) => value.step);
}
