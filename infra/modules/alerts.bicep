// The alerts, each with its runbook in docs/operations.md ("Alerts"):
// - a job reached the dead-letter queue (a deployment whose job was delivered 3 times, or expired);
// - deployments of one environment fail: at least a minimum number failed in the last hour and they
//   are more than a share of those that finished there; one rule per environment, so a broken
//   development deployment never pages and a production outage does even at two deployments an hour;
// - the API answers 5xx.
// Two action groups: "notify" (e-mail, alertEmail) gets every alert; "page" (pageEmail, e.g. the
// e-mail integration of a paging service) gets what needs someone now: production failures and API
// 5xx. Without addresses the alerts still fire and show under Monitor → Alerts.

@description('Region of the log alerts (metric alerts are global).')
param location string

@description('Tags for the alerts.')
param tags object

@description('Prefix of the alert names, e.g. the environment name.')
param namePrefix string

@description('Resource id of the Service Bus namespace.')
param serviceBusNamespaceId string

@description('Name of the job queue.')
param queueName string

@description('Resource id of the Application Insights component the apps send to.')
param appInsightsId string

@description('Resource id of the API container app.')
param apiAppId string

@minValue(1)
@maxValue(100)
@description('Failed deployments, as a percentage of those finished in one environment in the last hour, above which that environment\'s failure alert fires.')
param failureRatePercent int

@minValue(1)
@description('Failed deployments in one environment in the last hour before its failure alert may fire: low enough that an outage at a few deployments an hour fires (2 of 2 failed is 100 %), high enough that one failed build does not.')
param failureMinimumCount int

@minValue(1)
@description('API responses with a 5xx status in 5 minutes above which the 5xx alert fires.')
param api5xxThreshold int

@description('E-mail address every alert is sent to; empty: no notification.')
param alertEmail string

@description('E-mail address that pages the on-call (a paging service\'s e-mail integration): production deployment failures and API 5xx; empty: those go to alertEmail only.')
param pageEmail string

// Deployment environments: ENVIRONMENTS in packages/core/src/glossary.ts (test/infra/telemetry-queries.test.ts
// checks both lists match). Only production pages.
var failureAlertEnvironments = [
  { name: 'production', severity: 1, page: true }
  { name: 'staging', severity: 3, page: false }
  { name: 'development', severity: 3, page: false }
]

resource notifyGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-zepid-deploy-oncall'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'zepiddeploy'
    enabled: true
    emailReceivers: [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource pageGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(pageEmail)) {
  name: '${namePrefix}-zepid-deploy-page'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'zepidpage'
    enabled: true
    emailReceivers: [
      {
        name: 'pager'
        emailAddress: pageEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var notifyActionGroupIds = empty(alertEmail) ? [] : [notifyGroup.id]
var pageActionGroupIds = concat(empty(pageEmail) ? [] : [pageGroup.id], notifyActionGroupIds)

// Multi-line strings are verbatim in Bicep (no interpolation), hence the placeholders. Cancelled
// deployments do not count; failures include timeouts (errorCode TIMEOUT). The minimum is on
// failures, not on finished deployments: at 2 deployments an hour, both failing is an outage.
var failureRateQuery = '''
customEvents
| where name in ("DeploymentCompleted", "DeploymentFailed")
| where tostring(customDimensions.environment) == "__ENVIRONMENT__"
| summarize Failed = countif(name == "DeploymentFailed"), Finished = count()
| where Failed >= __MINIMUM_FAILED__
| extend FailureRatePercent = 100.0 * Failed / Finished
| project FailureRatePercent
'''

resource deadLetter 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-deployment-queue-dead-letter'
  location: 'global'
  tags: tags
  properties: {
    description: 'A job is in the dead-letter queue of ${queueName}: its deployment was delivered 3 times without finishing, or expired. See docs/operations.md#dead-letter-queue.'
    severity: 2
    enabled: true
    scopes: [
      serviceBusNamespaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          // The platform metric (Azure Monitor metrics keep its EntityName dimension; diagnostic settings do not export it).
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered-messages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                queueName
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    autoMitigate: true
    actions: [for id in notifyActionGroupIds: { actionGroupId: id }]
  }
}

resource failureRate 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [
  for target in failureAlertEnvironments: {
    name: '${namePrefix}-deployment-failures-${target.name}'
    location: location
    tags: tags
    properties: {
      displayName: '${namePrefix}: ${target.name} deployments failing (${failureMinimumCount}+ failed, above ${failureRatePercent}%)'
      description: 'In the last hour at least ${failureMinimumCount} ${target.name} deployments failed and they are more than ${failureRatePercent}% of the ${target.name} deployments that finished (cancelled ones do not count). See docs/operations.md#deployment-failures.'
      severity: target.severity
      enabled: true
      scopes: [
        appInsightsId
      ]
      evaluationFrequency: 'PT15M'
      windowSize: 'PT1H'
      criteria: {
        allOf: [
          {
            query: replace(replace(failureRateQuery, '__ENVIRONMENT__', target.name), '__MINIMUM_FAILED__', string(failureMinimumCount))
            timeAggregation: 'Maximum'
            metricMeasureColumn: 'FailureRatePercent'
            operator: 'GreaterThan'
            threshold: failureRatePercent
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: target.page ? pageActionGroupIds : notifyActionGroupIds
      }
    }
  }
]

resource api5xx 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-api-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'The API answered more than ${api5xxThreshold} requests with a 5xx status in 5 minutes. See docs/operations.md#api-5xx.'
    severity: 1
    enabled: true
    scopes: [
      apiAppId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          // The platform's request count, so the alert works even when the app's telemetry does not.
          criterionType: 'StaticThresholdCriterion'
          name: 'api-5xx'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'Requests'
          dimensions: [
            {
              name: 'statusCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: api5xxThreshold
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    // Every environment's deployments go through this API: its failures are production's too.
    actions: [for id in pageActionGroupIds: { actionGroupId: id }]
  }
}

output notifyActionGroupId string = empty(alertEmail) ? '' : notifyGroup.id
output pageActionGroupId string = empty(pageEmail) ? '' : pageGroup.id
