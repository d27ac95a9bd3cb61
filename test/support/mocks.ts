/**
 * Helpers for suites that run components under the mock runtime. Import only after
 * installMocks: building hosts loads modules that create resources.
 */
import type * as pulumi from "@pulumi/pulumi";
import type { RecordedResource } from "../../scripts/mock-runtime";

/** Waits until no new resource has been registered for a moment. */
export async function registrationsSettled(resources: RecordedResource[]): Promise<void> {
  let n = -1;
  while (n !== resources.length) {
    n = resources.length;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface CapturedOptions {
  type: string;
  name: string;
  props: Record<string, any>;
  opts: pulumi.CustomResourceOptions;
}

/**
 * Mocks never see resource options (ignoreChanges, protect, dependsOn): a transformation on the
 * component under test records them for every child.
 */
export function captureOptions(): { captured: CapturedOptions[]; transformation: pulumi.ResourceTransformation } {
  const captured: CapturedOptions[] = [];
  return {
    captured,
    transformation: (a) => {
      captured.push({ type: a.type, name: a.name, props: a.props, opts: a.opts });
      return undefined;
    },
  };
}
