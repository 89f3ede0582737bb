// The image a container app runs now, so a provisioning without a new image (azd provision, or
// deploy.yml's bootstrap) keeps it instead of going back to the placeholder.

@description('Name of the container app.')
param name string

@description('Whether the app exists; when false the output is empty.')
param exists bool

resource app 'Microsoft.App/containerApps@2025-01-01' existing = if (exists) {
  name: name
}

output image string = exists ? app!.properties.template.containers[0].image : ''
