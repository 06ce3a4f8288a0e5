/**
 * Reading a secret: the whole of stdin when it is a pipe (`echo $KEY | shoal login`), else a
 * prompt on the terminal that does not echo what is typed.
 */
import { CliError } from "./cli-error.ts";
import { ExitCode } from "./exit-codes.ts";

export async function readSecret(prompt: string): Promise<string> {
  return process.stdin.isTTY ? promptHidden(prompt) : (await readAll(process.stdin)).toString("utf8").trim();
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  // Echo goes off before the prompt shows: what is typed after it never appears.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  stdin.setEncoding("utf8");
  stdin.resume();
  return new Promise((resolve, reject) => {
    let typed = "";
    const finish = (error?: Error) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (error) reject(error);
      else resolve(typed.trim());
    };
    const onData = (data: string) => {
      for (const char of data) {
        if (char === "\r" || char === "\n") return finish();
        if (char === "\u0003") {
          return finish(new CliError("INTERRUPTED", "Interrupted", "Run the command again.", ExitCode.interrupted));
        }
        if (char === "\u007f" || char === "\b") typed = typed.slice(0, -1);
        else typed += char;
      }
    };
    stdin.on("data", onData);
  });
}
